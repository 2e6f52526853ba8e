"""Helpers shared by the test suite: process runners, clients, timing."""
