"""URL lists into the dataset: the lesson's lists parsed, then downloaded in parallel as a job.

Every URL goes through the safe fetcher (webapp.fetch) and every body through the store's
intake (decoded, verified, de-duplicated by content), so a list can be imported twice, or two
lists can overlap, and nothing already stored is ever overwritten. Each URL ends with one
outcome: stored, duplicate, or failed with the reason in words.
"""
import csv
import re
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from webapp.core import fetch
from webapp.core.words import plural
from webapp.dataset.store import Dataset
from webapp.ingest.folders import counts_line

DEFAULT_WORKERS = 8
MAX_WORKERS = 32
MAX_URLS = 10_000
FETCH_SETTINGS = ("FETCH_ALLOW_NETS", "FETCH_MAX_BYTES", "FETCH_DEADLINE")
# What each kind of fetch failure is called in the per-URL report.
FAILURES = {"http_status": "HTTP error", "timeout": "timeout", "too_large": "too large",
            "blocked": "blocked address", "bad_url": "bad URL", "upstream": "download failed"}
URL_START = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


@dataclass
class UrlList:
    """The distinct URLs of a list, and what was left out of it."""

    urls: list
    repeated: int = 0  # lines naming a URL already in the list
    over_limit: int = 0  # distinct URLs past the maximum count
    not_urls: list = field(default_factory=list)  # (line number, text) of lines with no URL

    def notes(self):
        """Say in words what was left out, or return an empty list."""
        out = []
        if self.repeated:
            out.append(f"{plural(self.repeated, 'repeated URL was', 'repeated URLs were')} "
                       "taken once")
        if self.over_limit:
            out.append(f"{plural(self.over_limit, 'URL')} past the maximum count "
                       f"{'was' if self.over_limit == 1 else 'were'} left out")
        if self.not_urls:
            shown = ", ".join(f"line {n} ({text[:40]!r})" for n, text in self.not_urls[:3])
            more = f" and {len(self.not_urls) - 3} more" if len(self.not_urls) > 3 else ""
            what = plural(len(self.not_urls), "line is not a web address",
                          "lines are not web addresses")
            out.append(f"{what}: {shown}{more}")
        return out


URL_HEADERS = {"url", "urls", "link", "href", "image_url", "image", "src"}


def _url_column(line):
    """Return the index of the URL column if a line is a CSV header naming one, else None."""
    cells = [c.strip().lower() for c in next(csv.reader([line]), [])]
    return next((i for i, c in enumerate(cells) if c in URL_HEADERS), None)


def _url_in(line, column=None):
    """Return the URL a line names (the whole line, or a CSV column's cell), or None."""
    if column is not None:
        cells = next(csv.reader([line]), [])
        text = cells[column].strip() if column < len(cells) else ""
    else:  # one URL per line, what the lesson's snippet saves: commas belong to the URL
        text = line.strip().strip('"').strip()
    return text if URL_START.match(text) and not any(c.isspace() for c in text) else None


def parse_url_list(text, limit=None):
    """Return the distinct URLs of a list: one per line, or a CSV with a url column."""
    limit = min(limit or MAX_URLS, MAX_URLS)
    result, seen, column = UrlList([]), set(), None
    lines = [(n, line) for n, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if lines and _url_column(lines[0][1]) is not None:
        column = _url_column(lines.pop(0)[1])
    for number, line in lines:
        url = _url_in(line, column)
        if url is None:
            result.not_urls.append((number, line.strip()))
        elif url in seen:
            result.repeated += 1
        elif len(result.urls) >= limit:
            result.over_limit += 1
        else:
            seen.add(url)
            result.urls.append(url)
    return result


@dataclass
class Outcome:
    """What happened to one URL."""

    url: str
    status: str  # stored, duplicate or failed
    detail: str = ""
    image_id: int | None = None


def fetch_one(url, limits):
    """Return (bytes, None) for a URL, or (None, FetchError) when it cannot be fetched."""
    try:
        return fetch.fetch(url, limits), None
    except fetch.FetchError as e:
        return None, e


def store_one(dataset, url, fetched, label=None, actor="admin"):
    """Put one fetched body through the intake and return the URL's outcome."""
    data, error = fetched
    if error is not None:
        return Outcome(url, "failed", f"{FAILURES.get(error.kind, error.kind)}: {error}")
    added = dataset.add_image(data, label=label, source="url", name=url, actor=actor,
                              write_csv=False)
    if added.status == "rejected":
        return Outcome(url, "failed", f"not an image: {added.reason}")
    return Outcome(url, added.status, added_detail(added, label), added.image_id)


def added_detail(added, label=None):
    """Say in words what the intake did with one picture (store.Added)."""
    if added.status == "stored":
        return f"as {label!r}" if label else "unlabeled"
    if added.status == "duplicate":
        note = f" ({added.reason})" if added.reason else ""
        return f"same picture as image #{added.image_id}{note}"
    return added.reason


def download(dataset, urls, limits, label=None, workers=DEFAULT_WORKERS, on_outcome=None,
             actor="admin"):
    """Fetch URLs `workers` at a time, storing each body as it arrives; return the outcomes.

    Fetching runs in threads; the intake runs here, in the calling thread, which owns the
    dataset's connection. At most two fetches per thread are in flight, so a long list never
    holds more than that many bodies in memory. `on_outcome(outcome, n_done)` may raise (a
    cancelled job): fetches not started are dropped and nothing is stored after it.
    """
    workers = clamp_workers(workers)
    pending = iter(urls)
    outcomes, running = [], {}
    pool = ThreadPoolExecutor(workers, thread_name_prefix="download")

    def submit_next():
        url = next(pending, None)
        if url is not None:
            running[pool.submit(fetch_one, url, limits)] = url

    try:
        for _ in range(2 * workers):
            submit_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                url = running.pop(future)
                outcomes.append(store_one(dataset, url, future.result(), label, actor))
                submit_next()
                if on_outcome:
                    on_outcome(outcomes[-1], len(outcomes))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return outcomes


def summary(counts):
    """Say what a download did, in one line."""
    return counts_line(counts, failed="failed")


def clamp_workers(workers):
    """Return how many downloads run at a time: the request, within 1 and MAX_WORKERS."""
    return max(1, min(int(workers or DEFAULT_WORKERS), MAX_WORKERS))


def job_params(cfg, urls, label=None, workers=DEFAULT_WORKERS, actor="admin"):
    """Return a download job's parameters: the list and the app settings its process needs."""
    return {"urls": list(urls), "label": label, "workers": clamp_workers(workers), "actor": actor,
            "store": Dataset.settings(cfg),
            "fetch": {k: cfg[k] for k in FETCH_SETTINGS}}


def download_into(dataset, urls, limits, label=None, workers=DEFAULT_WORKERS, actor="admin",
                  on_progress=None, on_item=None):
    """Download a URL list into the dataset, reporting each URL; return {status: count}.

    `on_item(url, status, detail, image_id)` records each URL's outcome; `on_progress(done,
    total, phase=, message=, detail=)` may raise to stop (a cancelled job): what was stored
    stays, and cleaned.csv says so.
    """
    workers = clamp_workers(workers)
    counts = Counter()
    progress = on_progress or (lambda *a, **kw: None)
    progress(0, len(urls), phase="downloading",
             message=f"Downloading {len(urls)} URLs, {workers} at a time"
                     + (f", into {label!r}" if label else ", unlabeled"))

    def report(outcome, done):
        counts[outcome.status] += 1
        if on_item:
            on_item(outcome.url, outcome.status, outcome.detail, outcome.image_id)
        progress(done)  # the counts are the items' own: one count on the page, not two

    try:
        download(dataset, urls, limits, label, workers, report, actor=actor)
    finally:
        dataset.write_cleaned_csv()
    return counts
