"""The chat domain: messages, rooms, membership and the chat side of presence.

``model`` and ``ports`` are what the storage backends see (the model and the interfaces
they implement); ``application`` is what the STOMP transport sees; ``http`` holds the
Flask views.
"""
