"""The store under load: N processes appending turns to one SQLite file at once (turns/s stored,
with the real pragmas: WAL, synchronous=FULL, BEGIN IMMEDIATE), and history search latency on a
database of 100k messages, one of them a 1 MB paste of one repeated word (200k hits in one message:
FTS5's own snippet() was quadratic in those). Measured, not asserted; the target is search under
100 ms (interactive), 1 s at most for the paste.

    python -m benchmarks.store_load [--processes 4] [--turns 200] [--messages 100000]

A turn is what `ChatSession` writes: the question, the reply row (`streaming`), one flush of its
text, and its end (`complete` with stats): four transactions.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import report
from chatbot.store import Store
from chatbot.store import search as search_module

SEARCH_TARGET_MS = 100.0
PASTE_TARGET_MS = 1000.0
PASTE_WORD, PASTE_REPEATS = "pasted", 200_000  # 1.4 MB of one word


def add_paste(path: Path) -> None:
    """One huge message of repeated hits, ending with a word that is nowhere near the others (a
    two-word query then reads every hit)."""
    conn = sqlite3.connect(path)
    with conn:
        cid = conn.execute("SELECT id FROM conversations ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute(
            "INSERT INTO messages (conversation_id, role, content, status, created_at, updated_at) "
            "VALUES (?, 'user', ?, 'complete', '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000')",
            (cid, f"{PASTE_WORD} " * PASTE_REPEATS + "lastly"),
        )
    conn.close()


def _append(path: str, tag: str, turns: int, start, done) -> None:
    with Store.open(path) as store:
        c = store.new_conversation(f"{tag}", "bench")
        parent = None
        start.wait(120)
        for i in range(turns):
            u = store.add_user_message(c, f"{tag} question {i}", parent)
            r = store.start_reply(c, u, None, {"temperature": 0.7}, i, "bench")
            store.update_reply(r, f"{tag} partial answer {i}")
            store.finish_reply(r, f"{tag} answer {i}", "complete", {"new_tokens": 12, "tokens_per_s": 25.0})
            parent = r
    done.put(tag)


def appending(path: Path, processes: int, turns: int) -> dict:
    Store.open(str(path)).close()
    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_append, args=(str(path), f"p{n}", turns, start, done)) for n in range(processes)]
    for p in procs:
        p.start()
    time.sleep(3.0)  # let every child import and open the store before the clock starts
    began = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - began
    errors = [p.exitcode for p in procs if p.exitcode != 0]
    with Store.open(str(path)) as store:
        stored = sum(c.message_count for c in store.list_conversations()) // 2
    return {
        "processes": processes,
        "turns_each": turns,
        "turns_stored": stored,
        "failed_processes": len(errors),
        "seconds": round(elapsed, 3),
        "turns_per_s": round(stored / elapsed, 1),
        "transactions_per_s": round(stored * 4 / elapsed, 1),
    }


# --- search at scale -----------------------------------------------------------------------------


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)}
    return sorted(words)


def build(path: Path, messages: int, seed: int = 0) -> tuple[float, list[str]]:
    """A database of `messages` messages (conversations of 20 turns), Zipf-like word frequencies,
    written with plain SQL in one transaction (the FTS triggers index it)."""
    Store.open(str(path)).close()
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    began = time.perf_counter()
    conn = sqlite3.connect(path)
    now = "2025-01-01 00:00:00.000000"
    with conn:
        per_conversation = 40
        for c in range(messages // per_conversation):
            conn.execute(
                "INSERT INTO conversations (title, model, archived, created_at, updated_at) VALUES (?, 'bench', 0, ?, ?)",
                (f"conversation {c}", now, now),
            )
            cid = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            parent = None
            for i in range(per_conversation):
                text = " ".join(rng.choices(words, weights, k=rng.randint(8, 60)))
                cur = conn.execute(
                    "INSERT INTO messages (conversation_id, parent_id, role, content, status, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, 'complete', ?, ?)",
                    (cid, parent, "user" if i % 2 == 0 else "assistant", text, now, now),
                )
                parent = cur.lastrowid
    conn.close()
    return time.perf_counter() - began, words


def timed(fn, repeats: int) -> dict:
    fn()  # warm
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
        "hits": len(result) if hasattr(result, "__len__") else None,
    }


def searching(path: Path, messages: int, repeats: int) -> dict:
    build_s, words = build(path, messages)
    add_paste(path)
    queries = {
        "common word": words[0],
        "mid-frequency word": words[300],
        "rare word": words[-1],
        "two words": f"{words[1]} {words[50]}",
        "no match": "zzzzqqqq",
        "punctuation": 'a "quoted" (text) -x *',
        f"a paste of {PASTE_REPEATS // 1000}k hits": PASTE_WORD,
        "a paste, two words far apart": f"{PASTE_WORD} lastly",
    }
    results = {}
    conn = sqlite3.connect(path)
    with Store.open(str(path)) as store:
        for name, query in queries.items():
            fts = search_module.fts_query(query)
            matching = conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?", (fts,)).fetchone()[0] if fts else 0
            results[name] = {"query": query, "matching_messages": matching,
                             **timed(lambda q=query: store.search(q, limit=20), repeats)}
        results["list conversations"] = timed(lambda: store.list_conversations(limit=50), repeats)
        results["open a conversation"] = timed(lambda: store.conversation(1), repeats)
    conn.close()
    return {"messages": messages, "build_seconds": round(build_s, 1), "db_mb": round(path.stat().st_size / 2**20, 1),
            "latency": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        one = appending(Path(tmp) / "one.db", 1, args.turns)
        many = appending(Path(tmp) / "many.db", args.processes, args.turns)
        search = searching(Path(tmp) / "big.db", args.messages, args.repeats)
    rows = [
        ("turns/s stored, 1 process", f"{one['turns_per_s']:.1f}", f"{one['turns_stored']} turns in {one['seconds']} s"),
        (
            f"turns/s stored, {args.processes} processes at once",
            f"{many['turns_per_s']:.1f}",
            f"{many['turns_stored']} of {args.processes * args.turns} turns, {many['failed_processes']} failed",
        ),
    ]
    for name, r in search["latency"].items():
        limit = PASTE_TARGET_MS if "paste" in name else SEARCH_TARGET_MS
        target = f"target < {limit:.0f} ms: {'met' if r['p95_ms'] < limit else 'MISSED'}"
        where = f", {r['matching_messages']} match" if "query" in r else ""
        rows.append((f"{name} @ {args.messages // 1000}k msgs{where} (median / p95 ms)", f"{r['median_ms']} / {r['p95_ms']}",
                     target if "query" in r else ""))
    report("Store under load", rows, {"append_one": one, "append_many": many, "search": search})


if __name__ == "__main__":
    main()
