-- Winnow's store. SQLite is the source of truth; cleaned.csv is derived from it.
CREATE TABLE IF NOT EXISTS images (
    id            INTEGER PRIMARY KEY,
    sha256        TEXT NOT NULL UNIQUE,      -- of the bytes as received
    path          TEXT NOT NULL,             -- relative to the data dir: images/ab/<sha256>.<ext>
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    format        TEXT NOT NULL,             -- detected format of the received bytes
    label         TEXT,                      -- a class name; deleted images keep theirs
    is_valid      INTEGER NOT NULL,          -- fixed at intake, never changed
    source        TEXT NOT NULL,             -- upload, folder, csv, url, demo, ...
    original_name TEXT,                      -- file name or URL it came from
    added         TEXT NOT NULL,
    deleted       TEXT                       -- set when moved to trash/
);
CREATE INDEX IF NOT EXISTS images_label ON images(label) WHERE deleted IS NULL;

CREATE TABLE IF NOT EXISTS classes (
    name    TEXT PRIMARY KEY,
    created TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY,
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    kind     TEXT NOT NULL,                  -- add, relabel, delete, restore, add_class, rename_class, delete_class
    image_id INTEGER REFERENCES images(id),
    before   TEXT,                           -- JSON
    after    TEXT                            -- JSON
);

CREATE TABLE IF NOT EXISTS models (
    version  TEXT PRIMARY KEY,
    created  TEXT NOT NULL,
    source   TEXT NOT NULL,                  -- trained, demo, imported
    arch     TEXT,
    size     INTEGER,
    sha256   TEXT NOT NULL,                  -- of export.pkl; checked before every load
    metrics  TEXT NOT NULL                   -- JSON, as in models/<version>/metrics.json
);

CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
