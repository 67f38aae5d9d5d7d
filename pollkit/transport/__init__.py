"""The HTTP transport: the only aiohttp client code in pollkit.

Sessions and their timeouts, retries of one request, the mapping of HTTP and socket
errors onto pollkit's, multipart bodies, redaction in debug logs, and the body sink
that receives large downloads into reusable buffers. It knows no provider's JSON.
"""
