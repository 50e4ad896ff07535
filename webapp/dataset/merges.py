"""Class merges: every image of some classes relabelled as one class, in one event undo reverts."""
from webapp.dataset.refusals import StoreError

NOW = "strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')"  # the store's timestamp format, in SQL


def _marks(names):
    return ",".join("?" * len(names))


class ClassMerges:
    """Merging classes and undoing a merge; mixed into Dataset, whose connection and events it uses.

    A merge is one `merge_classes` event that remembers each image's previous label (deleted
    images included: they keep their label, and a restore must not bring a merged class back)
    and each removed class, so that undo puts back exactly what was there.
    """

    def _merge_classes(self, names, into, actor):
        known = self.class_names()
        sources = sorted({n for n in names if n != into})
        if not sources:
            raise StoreError(f"choose at least one class besides {into!r} to merge into it")
        missing = [n for n in sources if n not in known]
        if missing:
            raise StoreError(f"there is no class {missing[0]!r}")
        rows = self.conn.execute(f"SELECT id, label, deleted FROM images WHERE label IN "
                                 f"({_marks(sources)}) ORDER BY id", sources).fetchall()
        classes = {r["name"]: r["created"] for r in self.conn.execute(
            f"SELECT name, created FROM classes WHERE name IN ({_marks(sources)})", sources)}
        created = into not in known
        if created:
            self.conn.execute(f"INSERT INTO classes(name, created) VALUES (?, {NOW})", (into,))
        self.conn.execute(f"UPDATE images SET label = ? WHERE label IN ({_marks(sources)})",
                          (into, *sources))
        self.conn.execute(f"DELETE FROM classes WHERE name IN ({_marks(sources)})", sources)
        moved = sum(1 for r in rows if not r["deleted"])
        self._event("merge_classes", actor,
                    before={"classes": classes, "labels": {str(r["id"]): r["label"] for r in rows}},
                    after={"name": into, "created": created, "images": moved})
        return moved

    def _unmerge_classes(self, before, after, actor):
        """Put a merge's classes and labels back (inside the current transaction)."""
        into, labels, known = after["name"], before["labels"], self.class_names()
        if into not in known:
            raise StoreError(f"class {into!r} was renamed or deleted since the merge; "
                             "undo that change first")
        back = [name for name in before["classes"] if name in known]
        if back:
            raise StoreError(f"a class {back[0]!r} exists again already")
        for image_id in labels:
            row = self.image(int(image_id))
            if row is not None and row["label"] != into:
                raise StoreError(f"image #{image_id} was relabelled since the merge (now "
                                 f"{row['label']!r}); undo that change first")
        self.conn.executemany("INSERT INTO classes(name, created) VALUES (?, ?)",
                              before["classes"].items())
        self.conn.executemany("UPDATE images SET label = ? WHERE id = ?",
                              [(label, int(image_id)) for image_id, label in labels.items()])
        emptied = not self.conn.execute("SELECT 1 FROM images WHERE label = ? LIMIT 1",
                                        (into,)).fetchone()
        if after.get("created") and emptied:  # made by the merge, and nothing joined it since
            self.conn.execute("DELETE FROM classes WHERE name = ?", (into,))
        self._event("unmerge_classes", actor, before={"name": into},
                    after={"classes": sorted(before["classes"]), "images": after.get("images")})
