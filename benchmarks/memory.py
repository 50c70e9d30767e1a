"""Memory beyond the window: are facts stated early still answered once they left the window?

    .venv/bin/python -m benchmarks.memory [--conversations 30] [--budgets 512 2048] [--modes off conversation summary]

Built here, with random values (seeded): each conversation plants three facts in its first turns
(a name, a number, a place: random made-up words and digits, in a few phrasings), then filler turns
(stored through the store API, no generation) until the facts are far outside the budget, then
one question per fact, answered greedily by the bundled model through `ChatSession` (the app's
own path). Reported per budget and memory mode:

- facts answered: the exact planted value in the reply;
- negative control: the same questions in conversations that never had the facts (memory on): any
  planted value in a reply or prompt counts (must be 0);
- leaks: a value planted in another conversation in a prompt or reply, with the default scope
  (must be 0);
- extra prompt tokens: the memory block's tokens per question;
- mode `summary`: recall with the rolling summary (memory/summary.py) written first, before the
  questions; how many planted values it kept, and the seconds it took;
- TTFT of turn 1 and of the last turn of one live conversation (every turn generated, so the
  engine's prefix reuse works as in use), memory on.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import report
from chatbot.config import Settings
from chatbot.engine.sampling import SamplingParams
from chatbot.memory.summary import message_ids, update_summary
from chatbot.personas.registry import find
from chatbot.runtime import open_runtime
from chatbot.session import ChatSession
from chatbot.store import Store

SYLLABLES = ["ba", "lo", "ri", "ven", "tor", "qui", "sel", "mar", "dun", "ka", "zel", "fi", "gor", "nia", "pel",
             "tra", "vo", "shen", "bri", "dal", "mo", "rek", "sa", "thu", "ul", "wen", "xan", "yor"]
FACTS = {
    "name": (["My name is {}.", "Hi! My name is {}, nice to meet you.", "Please remember that my name is {}."],
             "What is my name?"),
    "number": (["My favourite number is {}.", "By the way, my favourite number is {}.",
                "Note this: my favourite number is {}."], "What is my favourite number?"),
    "place": (["I live in {}.", "I live in a town called {}.", "These days I live in {}."], "Where do I live?"),
}
ACKS = ["Thank you for telling me.", "Got it, thanks.", "Nice, thank you for sharing that."]
# Filler: common words only (none of the facts' keywords), random sentences on random topics.
TOPICS = ["rivers", "bread", "chess", "volcanoes", "tea", "bicycles", "owls", "glass", "jazz", "tides",
          "maps", "copper", "gardens", "comets", "wool", "bridges", "honey", "clocks", "caves", "kites"]
WORDS = ("people often enjoy learning about how things work and why they change over time in many "
         "small ways that shape daily habits across cities farms and coasts while history shows slow "
         "patterns of trade craft and weather which early makers studied with care patience and skill").split()


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(3, 4))).capitalize()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


@dataclass
class Plan:
    facts: dict[str, str]  # kind -> value
    turns: list[tuple[str, str]] = field(default_factory=list)


def plan(rng: random.Random, filler_turns: int, with_facts: bool) -> Plan:
    values = {"name": made_up_word(rng), "number": str(rng.randint(1000, 9999)), "place": made_up_word(rng)}
    p = Plan(values if with_facts else {})
    if with_facts:
        for kind, value in values.items():
            p.turns.append((rng.choice(FACTS[kind][0]).format(value), rng.choice(ACKS)))
    for _ in range(filler_turns):
        topic = rng.choice(TOPICS)
        p.turns.append((f"Tell me something about {topic}.",
                        f"About {topic}: {sentence(rng, 14)} {sentence(rng, 12)}"))
    return p


def store_plan(store: Store, p: Plan) -> int:
    conversation = store.new_conversation(None, "benchmark")
    parent = None
    for user, reply in p.turns:
        user_id, reply_id = store.add_turn(conversation, user, parent, None, {}, None, "benchmark")
        store.finish_reply(reply_id, reply, "complete", {})
        parent = reply_id
    return conversation


@dataclass
class Outcome:
    asked: int = 0
    correct: int = 0
    retrieved: int = 0  # the planted value was in the memory block (the retriever's share of the work)
    negative_hits: int = 0
    leaks: int = 0
    block_tokens: list[int] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    in_summary: int = 0  # planted values the rolling summary kept (mode summary)
    summary_s: list[float] = field(default_factory=list)


def ask(session: ChatSession, question: str, params):
    reply = session.send(question, params)
    reply.run()
    return reply


def progress(**fields) -> None:
    """One JSON line per question on stderr: a long run on a busy machine leaves its figures so far."""
    print(json.dumps(fields), file=sys.stderr, flush=True)


def run_mode(runtime, base: Settings, persona, budget: int, mode: str, plans, controls, params,
             sequential: bool = False) -> Outcome:
    """Each conversation's three questions, each from the end of its filler (a branch of its own),
    or with `sequential` one after another (each sees the answers before it)."""
    summary = mode == "summary"  # recall with the rolling summary first in the block
    settings = base.model_copy(update={"context_budget": budget, "memory": "conversation" if summary else mode,
                                       "memory_summary": summary})
    outcome = Outcome()
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(str(Path(folder) / "memory.db"))
        stored = [(store_plan(store, p), p) for p in plans]
        control_ids = [store_plan(store, c) for c in controls] if mode != "off" else []
        every_value = {v for p in plans for v in p.facts.values()}
        for conversation, p in stored:
            session = ChatSession(runtime, settings, persona, store, conversation)
            filler_leaf = session.leaf_id
            if summary:  # written before the questions (in use: between turns, as turns are dropped)
                started = time.perf_counter()
                update_summary(session)
                outcome.summary_s.append(time.perf_counter() - started)
                found = store.memory_summary(conversation, message_ids(session.history))
                text = found[1].lower() if found else ""
                kept = sum(1 for v in p.facts.values() if v.lower() in text)
                outcome.in_summary += kept
                progress(budget=budget, mode=mode, summary_kept=kept, summary=text[:160],
                         seconds=round(outcome.summary_s[-1], 1))
            others = every_value - set(p.facts.values())
            for kind, value in p.facts.items():
                if not sequential:  # each question from the end of the filler, on a branch of its own
                    session.branch_from(filler_leaf)
                reply = ask(session, FACTS[kind][1], params)
                outcome.asked += 1
                hit = value.lower() in reply.text.lower()
                outcome.correct += hit
                outcome.retrieved += any(value.lower() in p.text.lower() for p in reply.context.recalled)
                if not hit:
                    outcome.misses.append(f"{kind} {value!r}: {reply.text[:80]!r}")
                seen = (reply.context.text + reply.text).lower()
                leaks = sum(1 for v in others if v.lower() in seen)
                outcome.leaks += leaks
                outcome.block_tokens.append(reply.context.memory_tokens)
                outcome.prompt_tokens.append(reply.context.tokens)
                progress(budget=budget, mode=mode, kind=kind, correct=hit, leaks=leaks, block=reply.context.memory_tokens,
                         retrieved=any(value.lower() in p.text.lower() for p in reply.context.recalled),
                         prompt=reply.context.tokens, ttft_ms=reply.stats.ttft_ms, reply=reply.text[:60])
        for conversation, p in zip(control_ids, plans):
            session = ChatSession(runtime, settings, persona, store, conversation)
            for kind in p.facts:
                reply = ask(session, FACTS[kind][1], params)
                seen = (reply.context.text + reply.text).lower()
                outcome.negative_hits += sum(1 for v in every_value if v.lower() in seen)
                progress(budget=budget, mode=mode, control=True, hits=sum(1 for v in every_value if v.lower() in seen))
        store.close()
    return outcome


def live_ttft(runtime, base: Settings, persona, budget: int, turns: int, rng, params, warm: bool = True) -> dict:
    """One conversation generated turn by turn (the engine keeps its cache between turns), with the
    interactive sessions' warm-up between turns (memory/warm.py; waited for before the next
    message, as a user's reading and typing would) or without it."""
    settings = base.model_copy(update={"context_budget": budget, "memory": "conversation"})
    p = plan(rng, turns, with_facts=True)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(str(Path(folder) / "ttft.db"))
        session = ChatSession(runtime, settings, persona, store)
        session.warm_between_turns = warm
        runtime.engine.reset()
        figures, warm_ms = [], []
        messages = [user for user, _ in p.turns][: turns - 1] + [FACTS["name"][1]]
        for message in messages:
            reply = session.send(message, params)
            reply.run()
            figures.append((reply.stats.ttft_ms, reply.stats.prompt_tokens, reply.stats.reused_tokens,
                            reply.context.memory_tokens, reply.context.dropped_turns))
            session.settle()
            if session.warmer is not None and session.warmer.seconds is not None:
                warm_ms.append(session.warmer.seconds * 1000)
            progress(live_turn=len(figures), warm=warm, ttft_ms=figures[-1][0], prompt=figures[-1][1],
                     reused=figures[-1][2], block=figures[-1][3], dropped=figures[-1][4],
                     warm_ms=warm_ms[-1] if warm and warm_ms else None)
        store.close()
    first, last = figures[0], figures[-1]
    fresh = [f[1] - f[2] for f in figures]
    # turn 1's TTFT is noisy on a loaded machine: the median of the first three, beside the last three
    return {"turns": len(figures), "warm": warm, "ttft_first_ms": round(statistics.median(f[0] for f in figures[:3]), 1),
            "ttft_last_ms": round(statistics.median(f[0] for f in figures[-3:]), 1),
            "prefilled_first3": fresh[:3], "prefilled_last3": fresh[-3:],
            "mean_prefilled_with_block": round(statistics.mean([n for n, f in zip(fresh, figures) if f[3]] or [0]), 1),
            "mean_warm_ms": round(statistics.mean(warm_ms), 1) if warm_ms else None,
            "last": {"prompt_tokens": last[1], "reused_tokens": last[2], "memory_tokens": last[3],
                     "dropped_turns": last[4]},
            "first": {"prompt_tokens": first[1], "reused_tokens": first[2]},
            "name_recalled": p.facts["name"].lower() in reply.text.lower()}


def filler_for(budget: int) -> int:
    """Filler turns (~65 tokens each) to put the facts well outside the budget (about 3x)."""
    return max(12, 3 * budget // 65)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=30)
    parser.add_argument("--controls", type=int, default=None, help="negative-control conversations (default: as many)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--modes", nargs="*", default=["off", "conversation"])
    parser.add_argument("--ttft-turns", type=int, default=40)
    parser.add_argument("--ttft-compare", action="store_true", help="the live conversation without warm-up too")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--sequential", action="store_true", help="ask the three questions one after another")
    parser.add_argument("--note", default="", help="e.g. 'measured while other jobs loaded the machine'")
    args = parser.parse_args()
    base = Settings()
    runtime = open_runtime(base)
    persona = find(base.persona, base.data_dir)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=args.max_new_tokens)
    rows, payload = [], {"conversations": args.conversations, "controls": args.controls, "seed": args.seed, "note": args.note,
                         "model": runtime.model_name, "engine": runtime.engine.name, "results": []}
    started = time.perf_counter()
    for budget in args.budgets:
        rng = random.Random(f"{args.seed}:{budget}")
        plans = [plan(rng, filler_for(budget), True) for _ in range(args.conversations)]
        controls = [plan(rng, filler_for(budget), False) for _ in range(args.conversations if args.controls is None else args.controls)]
        for mode in args.modes:
            o = run_mode(runtime, base, persona, budget, mode, plans, controls, params, args.sequential)
            share = o.correct / o.asked if o.asked else 0.0
            target = ">= 90%" if budget == 512 and mode != "off" else ""
            rows.append((f"{budget} tok, memory {mode}: facts answered", f"{o.correct}/{o.asked} ({share:.0%})", target))
            if mode == "summary":
                rows.append((f"{budget} tok, memory summary: planted values kept by the summary", f"{o.in_summary}/{o.asked}", ""))
                rows.append((f"{budget} tok, memory summary: seconds to write it / conversation",
                             f"{statistics.mean(o.summary_s):.1f}", "between turns, in use"))
            if mode != "off":
                rows.append((f"{budget} tok, memory {mode}: fact in the block (retrieved)", f"{o.retrieved}/{o.asked}", ""))
                rows.append((f"{budget} tok, memory {mode}: negative-control hits", str(o.negative_hits), "must be 0"))
                rows.append((f"{budget} tok, memory {mode}: leaks (default scope)", str(o.leaks), "must be 0"))
                rows.append((f"{budget} tok, memory {mode}: block tokens / question",
                             f"{statistics.mean(o.block_tokens):.0f}", f"of {int(budget * base.memory_share)}"))
            payload["results"].append({"budget": budget, "mode": mode, "asked": o.asked, "correct": o.correct,
                                       "retrieved": o.retrieved,
                                       "negative_control_hits": o.negative_hits, "leaks": o.leaks,
                                       "mean_block_tokens": round(statistics.mean(o.block_tokens), 1),
                                       "mean_prompt_tokens": round(statistics.mean(o.prompt_tokens), 1),
                                       "in_summary": o.in_summary if mode == "summary" else None,
                                       "mean_summary_s": round(statistics.mean(o.summary_s), 1) if o.summary_s else None,
                                       "misses": o.misses[:10]})
    if args.ttft_turns:
        budget = min(args.budgets)
        payload["ttft"] = []
        for warm in ([True, False] if args.ttft_compare else [True]):
            t = live_ttft(runtime, base, persona, budget, args.ttft_turns, random.Random(args.seed), params, warm)
            ratio = t["ttft_last_ms"] / t["ttft_first_ms"] if t["ttft_first_ms"] else float("nan")
            label = f"{budget} tok live, warm-up {'on' if warm else 'off'}"
            rows.append((f"{label}: TTFT turns 1-3 / last 3 (ms)", f"{t['ttft_first_ms']:.0f} / {t['ttft_last_ms']:.0f}",
                         f"ratio {ratio:.2f} (target <= 1.5)"))
            rows.append((f"{label}: tokens prefilled, turns 1-3 / last 3", f"{t['prefilled_first3']} / {t['prefilled_last3']}",
                         f"last block {t['last']['memory_tokens']} tok"))
            if warm:
                rows.append((f"{label}: background prefill between turns (ms, mean)", f"{t['mean_warm_ms']}", ""))
            payload["ttft"].append({**t, "ratio": round(ratio, 2), "budget": budget})
    payload["seconds"] = round(time.perf_counter() - started, 1)
    report("memory beyond the window" + (f" ({args.note})" if args.note else ""), rows, payload)


if __name__ == "__main__":
    main()
