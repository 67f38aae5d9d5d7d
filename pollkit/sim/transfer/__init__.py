"""The simulator's download side: serving bodies with ranges and validators (and
breaking them on purpose), output files, blobs of any size and hostile archives.
"""
