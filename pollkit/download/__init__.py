"""Downloads: one `Output` streamed to a verified file.

``.part`` files, resume with ``Range``/``If-Range``, size and checksum checks, atomic
renames, expired-URL refresh and safe archive extraction. It never decides when to poll.
"""
