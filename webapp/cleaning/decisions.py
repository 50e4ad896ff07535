"""The cleaner's decisions on images: keep, delete or relabel, one image or many at once, and undo.

Delete and relabel go through the store: each decision is one change (its events; cleaned.csv
rewritten at once) that the store can undo. Keep changes no image, so it is the cleaner's own
record (the clean_kept table): kept images and pairs stop being suggested until the keep is undone.
"Undo last" takes back whichever came last, a store change or a keep, and says which. A decision
that would change nothing (relabel to the label an image has, keep what is kept) says so and
records nothing, so undo still reaches the last decision that did something.
"""
from dataclasses import dataclass, field

from webapp.core import db
from webapp.core.words import plural
from webapp.dataset.store import StoreError, check_class_name, now

ACTIONS = ("keep", "delete", "relabel")
UNDO_KINDS = ("relabel", "delete")  # "undo last" here never takes back an upload or a class edit


class DecisionRefused(StoreError):
    """A decision the cleaner cannot apply; the message says why."""


def parse_ids(values):
    """Return image ids as unique ints in the order given, or refuse."""
    ids = []
    for v in values:
        try:
            i = int(v)
        except (TypeError, ValueError):
            raise DecisionRefused(f"{v!r} is not an image id") from None
        if i not in ids:
            ids.append(i)
    if not ids:
        raise DecisionRefused("choose at least one image")
    return ids


@dataclass
class Decision:
    """What a decision did, in words, and the images it changed (none: it was a no-op)."""

    message: str
    changed: list = field(default_factory=list)


def decide(dataset, action, image_ids, label=None, other_id=None, actor="admin"):
    """Apply one decision to one or more images as a single undoable step; say what was done."""
    ids = parse_ids(image_ids)
    if action == "delete":
        dataset.apply([{"kind": "delete", "image_id": i} for i in ids], actor)
        return Decision(f"Deleted {plural(len(ids), 'image')}.", ids)
    if action == "relabel":
        return _relabel(dataset, ids, label, actor)
    if action == "keep":
        return _keep(dataset, ids, other_id, actor)
    raise DecisionRefused(f"unknown decision {action!r}; choose one of {', '.join(ACTIONS)}")


def _unchanged(ids, words):
    """Say that a decision changes none of these images, and why."""
    who = f"Image #{ids[0]} is" if len(ids) == 1 else f"All {len(ids)} images are"
    return Decision(f"{who} already {words}: nothing changed.")


def _relabel(dataset, ids, label, actor):
    if not label:
        raise DecisionRefused("choose the class to relabel to")
    label = check_class_name(label)
    already = [i for i in ids if (row := dataset.image(i)) is not None
               and not row["deleted"] and row["label"] == label]
    todo = [i for i in ids if i not in already]
    if not todo:
        return _unchanged(ids, repr(label))
    dataset.apply([{"kind": "relabel", "image_id": i, "label": label} for i in todo], actor)
    done = f"Relabelled {plural(len(todo), 'image')} as {label!r}"
    if already:
        done += f" ({plural(len(already), 'image was', 'images were')} {label!r} already)"
    return Decision(done + ".", todo)


def _keep(dataset, ids, other_id, actor):
    kept = keep(dataset, ids, other_id, actor)
    if kept is None:
        return _unchanged(ids, "kept") if not other_id else Decision(
            "That pair is already kept as distinct: nothing changed.")
    if other_id:
        return Decision("Kept both images of the pair.", ids)
    return Decision(f"Kept {plural(len(ids), 'image')} as labelled.", ids)


def keep(dataset, image_ids, other_id=None, actor="admin"):
    """Record images (or, with other_id, pairs) as kept; return the decision's batch id.

    Images and pairs kept already are left as they are; when all are, nothing is recorded and
    the answer is None.
    """
    other = parse_ids([other_id])[0] if other_id not in (None, "") else None
    if other is not None and other in image_ids:
        raise DecisionRefused("a pair needs two different images")
    conn = dataset.conn
    with db.transaction(conn):
        wanted = set(image_ids) | ({other} if other else set())
        missing = wanted - dataset.live_ids(wanted)
        if missing:
            raise DecisionRefused(f"there is no live image with id {min(missing)}")
        if other is None:
            done = kept_images(conn)
            image_ids = [i for i in image_ids if i not in done]
        else:
            done = kept_pairs(conn)
            image_ids = [i for i in image_ids if (min(i, other), max(i, other)) not in done]
        after = dataset.last_event_id()
        batch = None
        for i in image_ids:
            a, b = (min(i, other), max(i, other)) if other else (i, None)
            cur = conn.execute(
                "INSERT INTO clean_kept(batch, image_id, other_id, at, actor, after_event) "
                "VALUES (?, ?, ?, ?, ?, ?)", (batch, a, b, now(), actor, after))
            if batch is None:
                batch = cur.lastrowid
                conn.execute("UPDATE clean_kept SET batch = id WHERE id = ?", (batch,))
    return batch


def kept_images(conn):
    """Return the ids of images kept as labelled (and not undone)."""
    return {r[0] for r in conn.execute(
        "SELECT image_id FROM clean_kept WHERE undone IS NULL AND other_id IS NULL")}


def kept_pairs(conn):
    """Return the (smaller id, larger id) pairs kept as distinct (and not undone)."""
    return {(r[0], r[1]) for r in conn.execute(
        "SELECT image_id, other_id FROM clean_kept WHERE undone IS NULL AND other_id IS NOT NULL")}


def undo_keep(conn, batch):
    """Undo one keep decision; return how many images or pairs it had kept."""
    with db.transaction(conn):
        n = conn.execute("UPDATE clean_kept SET undone = ? WHERE batch = ? AND undone IS NULL",
                         (now(), batch)).rowcount
    if not n:
        raise DecisionRefused(f"keep decision #{batch} does not exist or was undone already")
    return n


def keep_history(conn, limit=50):
    """Return keep decisions newest first: batch, when, image ids, pairs or not, undone when."""
    rows = conn.execute(
        "SELECT batch, MIN(at) AS at, GROUP_CONCAT(image_id) AS ids, MAX(other_id) AS other, "
        "COUNT(*) AS n, MAX(undone) AS undone FROM clean_kept GROUP BY batch "
        "ORDER BY batch DESC LIMIT ?", (limit,)).fetchall()
    return [{"batch": r["batch"], "at": r["at"], "n": r["n"], "undone": r["undone"],
             "text": (f"kept pair #{r['ids']} and #{r['other']} as distinct" if r["other"] else
                      f"kept image{'s' if r['n'] > 1 else ''} #{r['ids'].replace(',', ', #')} "
                      "as labelled")} for r in rows]


def undo_last(dataset, actor=None):
    """Undo the newest cleaning decision (a relabel/delete change, or a keep); say what, or None."""
    conn = dataset.conn
    change = dataset.last_change(actor, kinds=UNDO_KINDS)
    keep_row = conn.execute(
        "SELECT batch, MAX(after_event) AS after_event, MAX(other_id) AS other "
        "FROM clean_kept WHERE undone IS NULL "
        + ("AND actor = ? " if actor else "") + "GROUP BY batch ORDER BY batch DESC LIMIT 1",
        (actor,) if actor else ()).fetchone()
    change_end = dataset.change_events(change)[-1]["id"] if change else None
    if keep_row and (change is None or keep_row["after_event"] >= change_end):
        n = undo_keep(conn, keep_row["batch"])
        if keep_row["other"]:
            return "Undone: keeping a near-duplicate pair."
        return f"Undone: keeping {plural(n, 'image')} as labelled."
    if change is None:
        return None
    return f"Undone: {dataset.undo_change(change, actor or 'admin').text(UNDO_KINDS)}."
