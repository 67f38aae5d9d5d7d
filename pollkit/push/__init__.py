"""Server push: the notification hub that ends waits, the SSE status stream and the
webhook receiver. Push shortens waits; the cadence stays the client's.
"""
