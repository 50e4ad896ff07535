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
    after    TEXT,                           -- JSON
    change_id INTEGER,                       -- first event of the change it belongs to (one undo step)
    undoes   INTEGER                         -- the event this one reverts
);

CREATE TABLE IF NOT EXISTS models (
    version  TEXT PRIMARY KEY,
    created  TEXT NOT NULL,
    source   TEXT NOT NULL,                  -- trained, demo, imported
    arch     TEXT,
    size     INTEGER,
    sha256   TEXT NOT NULL,                  -- of export.pkl; checked before every load
    metrics  TEXT NOT NULL,                  -- JSON, as in models/<version>/metrics.json
    status   TEXT NOT NULL DEFAULT 'ready'   -- pending (trained, not yet scored), ready
);

CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Long work run in its own process (webapp/jobs.py): downloads, training, scoring.
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,             -- download, train, score
    params        TEXT NOT NULL,             -- JSON
    status        TEXT NOT NULL,             -- queued, running, succeeded, failed, cancelled
    actor         TEXT NOT NULL,
    pid           INTEGER,
    created       REAL NOT NULL,             -- unix times
    started       REAL,
    finished      REAL,
    heartbeat     REAL,
    phase         TEXT,
    phase_started REAL,
    done          INTEGER NOT NULL DEFAULT 0,
    total         INTEGER,
    message       TEXT,
    detail        TEXT,                      -- JSON: latest losses, counts
    result        TEXT,                      -- JSON
    cancel        INTEGER NOT NULL DEFAULT 0,
    cancel_requested REAL                    -- when Cancel was first asked: the grace starts
);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs(status) WHERE status IN ('queued', 'running');

CREATE TABLE IF NOT EXISTS job_items (
    id       INTEGER PRIMARY KEY,
    job_id   INTEGER NOT NULL REFERENCES jobs(id),
    key      TEXT NOT NULL,                  -- the URL or file name
    status   TEXT NOT NULL,                  -- stored, duplicate, failed, ...
    detail   TEXT,                           -- the reason, in words
    image_id INTEGER,
    at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS job_items_job ON job_items(job_id, id);

-- The cleaner's "keep" decisions (webapp/decisions.py): an image judged right despite the model,
-- or a near-duplicate pair judged distinct, is no longer suggested. Undoing one marks it undone.
CREATE TABLE IF NOT EXISTS clean_kept (
    id          INTEGER PRIMARY KEY,
    batch       INTEGER,                     -- first row of the decision it belongs to (one undo step)
    image_id    INTEGER NOT NULL REFERENCES images(id),
    other_id    INTEGER,                     -- a kept pair's other (larger) image id; NULL for one image
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    after_event INTEGER NOT NULL DEFAULT 0,  -- the newest event then: orders keeps among store changes
    undone      TEXT                         -- when it was undone
);
CREATE INDEX IF NOT EXISTS clean_kept_live ON clean_kept(image_id) WHERE undone IS NULL;

-- The active model's suggestion for an unlabeled image (webapp/unlabeled.py), per model version.
CREATE TABLE IF NOT EXISTS suggestions (
    version    TEXT NOT NULL,                -- model version that made it
    image_id   INTEGER NOT NULL REFERENCES images(id),
    label      TEXT NOT NULL,                -- its most likely class
    confidence REAL NOT NULL,                -- that class's probability
    PRIMARY KEY (version, image_id)
);

-- Tokens that let a serving node read the model registry (webapp/model/node_tokens.py). Only
-- the token's sha256 is kept: the token itself is shown once, when it is made.
CREATE TABLE IF NOT EXISTS node_tokens (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL,                 -- which node holds it, in the admin's words
    hash      TEXT NOT NULL UNIQUE,          -- sha256 hex of the token
    created   TEXT NOT NULL,
    last_used TEXT,                          -- to the minute: not written on every request
    revoked   TEXT                           -- set when revoked; a revoked token opens nothing
);
