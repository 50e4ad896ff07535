"""The bottom layer: the SQLite connection, image decoding, safe fetching, files, thumbnails."""
