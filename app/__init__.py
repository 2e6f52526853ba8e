"""Smooth: a real-time chat backend (STOMP chat server and TCP presence server).

This package module stays empty on purpose: ``python -m app.tcp_presence`` and the gunicorn
workers must monkey-patch with gevent before ssl, sockets or Flask are imported, and
importing a submodule imports this file first. The chat server is built by
``app.composition``.
"""
