"""Downloads: one `Output` streamed to a verified file.

``.part`` files, resume with ``Range``/``If-Range``, size and checksum checks, atomic
renames, expired-URL refresh and safe archive extraction. It never decides when to poll.
"""

from pollkit.download._archive import extract_zip

__all__ = ["extract_zip"]
