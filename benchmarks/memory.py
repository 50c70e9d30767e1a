"""Memory beyond the window: are facts stated early still answered once they left the window?

    .venv/bin/python -m benchmarks.memory [--conversations 30] [--budgets 512 2048] [--modes off conversation summary]
        [--summary-conversations 5 --summary-budgets 512] [--ttft-turns 40 --repeats 3] [--offset N]

(the figures in docs/design.md: 30 conversations at 512 and 2048, summary on 5 at 512, about 30
minutes at 1 thread on the 2-core AMD EPYC Zen 3 under load 2-5)

Built here, with random values (seeded): each conversation plants three facts in its first turns
(a name, a number, a place: random made-up words and digits, in a few phrasings), then filler turns
(stored through the store API, no generation) until the facts are far outside the budget, then
one question per fact, answered greedily by the bundled model through `ChatSession` (the app's
own path). Reported per budget and memory mode:

- facts answered: the exact planted value in the reply;
- negative control: the same questions in conversations that never had the facts (memory on): each
  fact conversation's own filler without its fact turns, in the same database, asked right after
  it (so the window is the same and the engine reuses it); any planted value in a reply or prompt
  counts (must be 0);
- leaks: a value planted in another conversation in a prompt or reply, with the default scope
  (must be 0);
- extra prompt tokens: the memory block's tokens per question;
- mode `summary`: recall with the rolling summary (memory/summary.py) written first, before the
  questions; how many planted values it kept, and the seconds it took;
- TTFT of turn 1 and of the last turn (a question whose answer was dropped) of one live
  conversation (every turn generated, so the engine's prefix reuse works as in use, with the
  interactive sessions' warm-up between turns), memory on: each the median of `--repeats`
  measurements (turn 1: a fresh conversation on an emptied cache; the last turn: asked again on
  a branch from the same point after the warm-up), as the engine counts it (prefill) and from
  `send` to the first token (also the recall search and the prompt's build); and the TTFT of
  every turn that had a memory block.
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
from chatbot.memory import recall
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

    def control(self) -> "Plan":
        """The same conversation without its fact turns: the negative control."""
        return Plan({}, self.turns[len(self.facts):])


def plan(rng: random.Random, filler_turns: int) -> Plan:
    """A conversation with its three facts first (its control: `Plan.control`)."""
    values = {"name": made_up_word(rng), "number": str(rng.randint(1000, 9999)), "place": made_up_word(rng)}
    p = Plan(values)
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
    controls: int = 0  # control conversations asked
    leaks: int = 0
    block_tokens: list[int] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)  # per question: mostly a full prefill of the window
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


def run_mode(runtime, base: Settings, persona, budget: int, mode: str, plans, controls: int, params,
             sequential: bool = False) -> Outcome:
    """Each conversation's three questions, each from the end of its filler (a branch of its own),
    or with `sequential` one after another (each sees the answers before it); then, for the first
    `controls` conversations, the same questions in its control (memory on only)."""
    summary = mode == "summary"  # recall with the rolling summary first in the block
    settings = base.model_copy(update={"context_budget": budget, "memory": "conversation" if summary else mode,
                                       "memory_summary": summary})
    outcome = Outcome()
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(str(Path(folder) / "memory.db"))
        stored = [(store_plan(store, p), p) for p in plans]
        control_ids = [store_plan(store, p.control()) for p in plans[:controls]] if mode != "off" else []
        every_value = {v for p in plans for v in p.facts.values()}
        for index, (conversation, p) in enumerate(stored):
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
                outcome.ttft_ms.append(reply.stats.ttft_ms)
                progress(budget=budget, mode=mode, kind=kind, correct=hit, leaks=leaks, block=reply.context.memory_tokens,
                         retrieved=any(value.lower() in p.text.lower() for p in reply.context.recalled),
                         prompt=reply.context.tokens, ttft_ms=reply.stats.ttft_ms, reply=reply.text[:60])
            if index < len(control_ids):  # right after its fact conversation: the same window, reused
                outcome.controls += 1
                session = ChatSession(runtime, settings, persona, store, control_ids[index])
                for kind in p.facts:
                    reply = ask(session, FACTS[kind][1], params)
                    seen = (reply.context.text + reply.text).lower()
                    hits = sum(1 for v in every_value if v.lower() in seen)
                    outcome.negative_hits += hits
                    progress(budget=budget, mode=mode, control=True, hits=hits, prompt=reply.context.tokens,
                             reused=reply.stats.reused_tokens)
        store.close()
    return outcome


def timed_send(session: ChatSession, message: str, params) -> tuple[object, float]:
    """The reply and the milliseconds from `send` to its first token: the recall search, the
    prompt's build and the store's writes (`send`), then the engine's prefill (its TTFT)."""
    started = time.perf_counter()
    reply = session.send(message, params)
    before_engine = (time.perf_counter() - started) * 1000
    reply.run()
    return reply, before_engine + reply.stats.ttft_ms


def live_ttft(runtime, base: Settings, persona, budget: int, turns: int, rng, params, warm: bool = True,
              repeats: int = 3) -> dict:
    """One conversation generated turn by turn (the engine keeps its cache between turns), with the
    interactive sessions' warm-up between turns (memory/warm.py; waited for before the next
    message, as a user's reading and typing would) or without it. Its last message asks for the
    name planted at turn 1. Turn 1 and the last turn are measured `repeats` times (medians)."""
    settings = base.model_copy(update={"context_budget": budget, "memory": "conversation"})
    p = plan(rng, turns)
    messages = [user for user, _ in p.turns][: turns - 1] + [FACTS["name"][1]]
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(str(Path(folder) / "ttft.db"))
        first_engine, first_send = [], []
        for _ in range(repeats):  # turn 1 as a new conversation starts it: nothing cached
            session = ChatSession(runtime, settings, persona, store)
            session.warm_between_turns = warm
            runtime.engine.reset()
            reply, send_ms = timed_send(session, messages[0], params)
            first_engine.append(reply.stats.ttft_ms)
            first_send.append(send_ms)
            session.settle()
        figures, warm_ms = [], []
        for message in messages:
            leaf = session.leaf_id
            if figures:
                reply, send_ms = timed_send(session, message, params)
            else:  # the last of the turn-1 repeats is this conversation's turn 1
                send_ms = first_send[-1]
            figures.append((reply.stats.ttft_ms, reply.stats.prompt_tokens, reply.stats.reused_tokens,
                            reply.context.memory_tokens, reply.context.dropped_turns, send_ms))
            session.settle()
            if session.warmer is not None and session.warmer.seconds is not None:
                warm_ms.append(session.warmer.seconds * 1000)
            progress(live_turn=len(figures), warm=warm, ttft_ms=figures[-1][0], send_to_first_ms=round(send_ms, 1),
                     prompt=figures[-1][1], reused=figures[-1][2], block=figures[-1][3], dropped=figures[-1][4],
                     warm_ms=warm_ms[-1] if warm and warm_ms else None)
        name_recalled = p.facts["name"].lower() in reply.text.lower()
        last_engine, last_send = [figures[-1][0]], [figures[-1][5]]
        for _ in range(repeats - 1):  # the last turn again, from the same point, after the warm-up
            session.branch_from(leaf)
            if warm:
                from chatbot.memory.warm import warm_next_turn

                session.warmer = warm_next_turn(session)
                session.settle()
            reply, send_ms = timed_send(session, messages[-1], params)
            last_engine.append(reply.stats.ttft_ms)
            last_send.append(send_ms)
            progress(last_turn_again=True, ttft_ms=reply.stats.ttft_ms, send_to_first_ms=round(send_ms, 1),
                     prefilled=reply.stats.prompt_tokens - reply.stats.reused_tokens)
        store.close()
    last = figures[-1]
    fresh = [f[1] - f[2] for f in figures]
    with_block = [f for f in figures if f[3]]
    median = statistics.median
    return {"turns": len(figures), "warm": warm, "repeats": repeats,
            "ttft_turn1_ms": round(median(first_engine), 1), "ttft_last_ms": round(median(last_engine), 1),
            "send_to_first_turn1_ms": round(median(first_send), 1), "send_to_first_last_ms": round(median(last_send), 1),
            "ttft_turn1_samples": [round(x) for x in first_engine], "ttft_last_samples": [round(x) for x in last_engine],
            "prefilled_turn1": fresh[0], "prefilled_last": fresh[-1],
            "recall_turns": len(with_block),
            "recall_turns_ttft_median_ms": round(median(f[0] for f in with_block), 1) if with_block else None,
            "recall_turns_ttft_max_ms": round(max(f[0] for f in with_block), 1) if with_block else None,
            "recall_turns_prefilled_median": median(f[1] - f[2] for f in with_block) if with_block else None,
            "recall_turns_block_median": median(f[3] for f in with_block) if with_block else None,
            "mean_warm_ms": round(statistics.mean(warm_ms), 1) if warm_ms else None,
            "last": {"prompt_tokens": last[1], "reused_tokens": last[2], "memory_tokens": last[3],
                     "dropped_turns": last[4]},
            "name_recalled": name_recalled}


def filler_for(budget: int) -> int:
    """Filler turns (~65 tokens each) to put the facts well outside the budget (about 3x)."""
    return max(12, 3 * budget // 65)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=30)
    parser.add_argument("--controls", type=int, default=None, help="negative-control conversations (default: as many)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--modes", nargs="*", default=["off", "conversation"])
    parser.add_argument("--offset", type=int, default=0,
                        help="skip the first N conversations (finish a run that was cut short: the plans are seeded)")
    parser.add_argument("--ttft-turns", type=int, default=40)
    parser.add_argument("--ttft-budget", type=int, default=None, help="the live conversation's budget (default: the smallest)")
    parser.add_argument("--ttft-compare", action="store_true", help="the live conversation without warm-up too")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of turn 1 and of the last turn (medians)")
    parser.add_argument("--summary-conversations", type=int, default=None,
                        help="conversations for mode summary (default: all; the model writes each summary)")
    parser.add_argument("--summary-budgets", type=int, nargs="*", default=None, help="budgets for mode summary (default: all)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--sequential", action="store_true", help="ask the three questions one after another")
    parser.add_argument("--min-score-ratio", type=float, default=None,
                        help="recall's cut-off: a candidate below this share of the best score is left out (default: recall's own)")
    parser.add_argument("--note", default="", help="e.g. 'measured while other jobs loaded the machine'")
    args = parser.parse_args()
    if args.min_score_ratio is not None:
        recall.MIN_SCORE_RATIO = args.min_score_ratio
    base = Settings()
    runtime = open_runtime(base)
    persona = find(base.persona, base.data_dir)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=args.max_new_tokens)
    rows, payload = [], {"conversations": args.conversations, "offset": args.offset, "controls": args.controls, "seed": args.seed, "note": args.note,
                         "min_score_ratio": recall.MIN_SCORE_RATIO, "model": runtime.model_name, "engine": runtime.engine.name, "results": []}
    started = time.perf_counter()
    for budget in args.budgets:
        rng = random.Random(f"{args.seed}:{budget}")
        plans = [plan(rng, filler_for(budget)) for _ in range(args.conversations)][args.offset :]
        controls = args.conversations if args.controls is None else args.controls
        for mode in args.modes:
            if mode == "summary" and args.summary_budgets is not None and budget not in args.summary_budgets:
                continue
            some = plans[: args.summary_conversations] if mode == "summary" and args.summary_conversations else plans
            o = run_mode(runtime, base, persona, budget, mode, some, min(controls, len(some)), params, args.sequential)
            share = o.correct / o.asked if o.asked else 0.0
            target = ">= 90%" if budget == 512 and mode != "off" else ""
            rows.append((f"{budget} tok, memory {mode}: facts answered", f"{o.correct}/{o.asked} ({share:.0%})", target))
            if mode == "summary":
                rows.append((f"{budget} tok, memory summary: planted values kept by the summary", f"{o.in_summary}/{o.asked}", ""))
                rows.append((f"{budget} tok, memory summary: seconds to write it / conversation",
                             f"{statistics.mean(o.summary_s):.1f}", "between turns, in use"))
            if mode != "off":
                rows.append((f"{budget} tok, memory {mode}: fact in the block (retrieved)", f"{o.retrieved}/{o.asked}", ""))
                rows.append((f"{budget} tok, memory {mode}: negative-control hits", f"{o.negative_hits} in {3 * o.controls} questions", "must be 0"))
                rows.append((f"{budget} tok, memory {mode}: leaks (default scope)", str(o.leaks), "must be 0"))
                rows.append((f"{budget} tok, memory {mode}: block tokens / question",
                             f"{statistics.mean(o.block_tokens):.0f}", f"of {int(budget * base.memory_share)}"))
            payload["results"].append({"budget": budget, "mode": mode, "asked": o.asked, "correct": o.correct,
                                       "conversations": len(some), "control_conversations": o.controls,
                                       "retrieved": o.retrieved,
                                       "negative_control_hits": o.negative_hits, "leaks": o.leaks,
                                       "mean_block_tokens": round(statistics.mean(o.block_tokens), 1),
                                       "mean_prompt_tokens": round(statistics.mean(o.prompt_tokens), 1),
                                       "mean_ttft_ms": round(statistics.mean(o.ttft_ms), 1),
                                       "in_summary": o.in_summary if mode == "summary" else None,
                                       "mean_summary_s": round(statistics.mean(o.summary_s), 1) if o.summary_s else None,
                                       "misses": o.misses[:10]})
    if args.ttft_turns:
        budget = args.ttft_budget or min(args.budgets)
        payload["ttft"] = []
        for warm in ([True, False] if args.ttft_compare else [True]):
            t = live_ttft(runtime, base, persona, budget, args.ttft_turns, random.Random(args.seed), params, warm,
                          args.repeats)
            ratio = t["ttft_last_ms"] / t["ttft_turn1_ms"]
            send_ratio = t["send_to_first_last_ms"] / t["send_to_first_turn1_ms"]
            label = f"{budget} tok live, warm-up {'on' if warm else 'off'}"
            rows.append((f"{label}: TTFT turn 1 / turn {t['turns']} (ms, engine)", f"{t['ttft_turn1_ms']:.0f} / {t['ttft_last_ms']:.0f}",
                         f"ratio {ratio:.2f} (target <= 1.5)"))
            rows.append((f"{label}: send to first token, turn 1 / turn {t['turns']} (ms)",
                         f"{t['send_to_first_turn1_ms']:.0f} / {t['send_to_first_last_ms']:.0f}", f"ratio {send_ratio:.2f}"))
            rows.append((f"{label}: tokens prefilled, turn 1 / turn {t['turns']}", f"{t['prefilled_turn1']} / {t['prefilled_last']}",
                         f"its block {t['last']['memory_tokens']} tok, name recalled: {t['name_recalled']}"))
            if t["recall_turns"]:
                rows.append((f"{label}: the {t['recall_turns']} turns with a block: TTFT median / max (ms)",
                             f"{t['recall_turns_ttft_median_ms']:.0f} / {t['recall_turns_ttft_max_ms']:.0f}",
                             f"prefilled {t['recall_turns_prefilled_median']}, block {t['recall_turns_block_median']} (medians)"))
            if warm:
                rows.append((f"{label}: background prefill between turns (ms, mean)", f"{t['mean_warm_ms']}", ""))
            payload["ttft"].append({**t, "ratio": round(ratio, 2), "send_ratio": round(send_ratio, 2), "budget": budget})
    payload["seconds"] = round(time.perf_counter() - started, 1)
    report("memory beyond the window" + (f" ({args.note})" if args.note else ""), rows, payload)


if __name__ == "__main__":
    main()
