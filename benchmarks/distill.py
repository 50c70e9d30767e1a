"""A character card compiled into a soft prompt, on the bundled model, through the real CLI: the
benchmark writes a real-world shaped card (~1,000 tokens of description, personality, scenario
and example dialogue, with a lorebook: benchmarks/distill_card.py), `persona import`s it and
`persona distill`s it, then reports what the distilled persona's training card records: prompt
tokens per turn under the card's text and under the soft prompt, held-out reply NLL under no
persona / the card as text / the soft prompt, and attribution.

Target: the soft prompt's NLL within 5% of the card text's (or lower), with >= 90% fewer prompt
tokens.

    PYTHONPATH=. .venv/bin/python -m benchmarks.distill [--steps 40] [--lr 0.03] [--virtual-tokens 20]
        [--init text|vocab|random] [--limit 40] [--work DIR] [--teacher-from DIR] [--json]

`--teacher-from DIR` reuses the teacher replies of an earlier run's distilled persona folder
(its data.jsonl): only the training is run again, e.g. to try another learning rate.

Learning from use, after a run kept with `--work DIR`:

    PYTHONPATH=. .venv/bin/python -m benchmarks.distill --work DIR --learn-from-use [--steps 10] [--lr 0.005] [--chat-as-card]

chats with the distilled persona (a conversation per question list of `USE_CONVERSATIONS`, its
opening first, sampled with the persona's settings and a fixed seed; kept in the work dir, so a
second run rates the same replies again instead of chatting anew), a scripted user rates each
reply (good when it stays in character: an *action* in asterisks, as the card's examples do, or one
of the card's sayings or things of Granny's world, `IN_CHARACTER`; bad otherwise), then
`persona train granny-soft --from-history` continues the soft prompt on the liked replies and
reports their held-out NLL before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import report
from benchmarks.distill_card import CARD

TEACHER = "granny-thistlewood"
STUDENT = "granny-soft"

# Questions none of the distill prompts ask, three to a conversation.
USE_CONVERSATIONS = (
    ("I have a headache.", "Should I take a pill?", "What else can I do?"),
    ("My garden is full of weeds.", "Can I eat any of them?", "How do I cook nettles?"),
    ("I feel lonely lately.", "How do I meet people here?", "Will you tell me a story?"),
    ("What do you sell in this shop?", "What is the strangest remedy you know?", "Does it work?"),
    ("I burned my hand on the stove.", "Does it need a doctor?", "How long will it hurt?"),
    ("It has been raining for a week.", "What should I do indoors?", "Any recipe for a cold evening?"),
    ("My cat will not eat.", "Is that serious?", "What does Sorrel eat?"),
    ("I have an exam tomorrow.", "How do I stop worrying?", "What should I eat tonight?"),
    ("Tell me about your grandmother.", "What did she teach you?", "Do you miss her?"),
    ("I want to learn about herbs.", "Which one should I start with?", "Where do I find it?"),
    ("I can't stop coughing.", "Is honey good for it?", "What about at night?"),
    ("What do you think of the new chemist?", "Are his pills bad?", "Should I go to him?"),
)
# Granny's sayings and her world (the card's herbs, cat, shop, town): a reply that uses none of
# them is one any persona could have given.
IN_CHARACTER = ("petal", "my duck", "aye", "reckon", "mind you", "happen", "chamomile", "lavender", "yarrow",
                "nettle", "elderflower", "thyme", "feverfew", "peppermint", "kettle", "sorrel", "brackenford", "herb",
                "tabby", "cat", "river", "town", "shop", "tea", "remedy", "honey", "garden", "grandmother", "sweetie",
                "tonic", "brew", "shawl", "love")


def cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "chatbot", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"chatbot {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def in_character(text: str) -> bool:
    """The scripted user's taste: Granny's voice, as the card writes it."""
    return text.count("*") >= 2 or any(word in text.lower() for word in IN_CHARACTER)


def learn_from_use(work: Path, env: dict, args: argparse.Namespace) -> None:
    os.environ.update(env)  # the settings below read the benchmark's data dir and database
    from chatbot.config import Settings
    from chatbot.personas.registry import find
    from chatbot.runtime import open_runtime
    from chatbot.session import ChatSession, resolve_sampling
    from chatbot.store import Store

    settings = Settings()
    # --chat-as-card: the conversations are had with the card itself (its text in every prompt);
    # the distilled soft prompt learns from the liked replies of its teacher
    persona = find(TEACHER if args.chat_as_card else STUDENT, settings.data_dir)
    load_before = os.getloadavg()
    started = time.perf_counter()
    ratings = {"good": 0, "bad": 0}
    with Store.open(settings.database_url()) as store:
        if not store.list_conversations():
            runtime = open_runtime(settings)
            for n, questions in enumerate(USE_CONVERSATIONS):
                session = ChatSession(runtime, settings, persona, store)
                for m, question in enumerate(questions):
                    params = resolve_sampling(settings, persona).model_copy(update={"seed": 1000 * n + m, "max_new_tokens": 48})
                    session.send(question, params).run()
        for summary in store.list_conversations():
            for message in store.conversation(summary.id).messages:
                if message.role == "assistant" and message.parent_id is not None:  # a reply, not an opening
                    rating = "good" if in_character(message.content) else "bad"
                    store.rate(message.id, rating)
                    ratings[rating] += 1
    chat_seconds = time.perf_counter() - started
    steps = args.steps
    cli(env, "persona", "train", STUDENT, "--from-history", "--steps", str(steps), "--heldout", "0.25",
        "--lr", str(args.lr), "--batch-size", str(args.batch_size))
    record = json.loads((work / "data" / "personas" / STUDENT / "soft_prompt" / "training.json").read_text())
    used = record["from_history"]
    before, after = record["heldout_loss_init"], record["heldout_loss_best"]
    payload = {
        "chatted_as": persona.persona.name, "replies": sum(ratings.values()), "rated": ratings, "continued": used["continued"],
        "n_train_replies": len(used["train_message_ids"]), "n_heldout_replies": len(used["heldout_message_ids"]),
        "heldout_nll_before": round(before, 4), "heldout_nll_after": round(after, 4),
        "change": round(after / before - 1, 4), "best_step": record["best_step"], "steps": steps,
        "lr": args.lr, "batch_size": args.batch_size, "history": record["history"],
        "chat_seconds": round(chat_seconds, 1), "train_seconds": record["seconds"],
        "seconds_per_step": record["seconds_per_step"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "work": str(work),
    }
    if args.json:
        print(json.dumps(payload, indent=1))
        return
    rows = [
        ("replies rated good / bad (scripted user)", f"{ratings['good']} / {ratings['bad']}", ""),
        ("liked replies trained on / held out", f"{payload['n_train_replies']} / {payload['n_heldout_replies']}",
         "continued from the distilled soft prompt" if used["continued"] else "a new soft prompt"),
        ("held-out liked replies' NLL before", f"{before:.3f}", ""),
        ("held-out liked replies' NLL after", f"{after:.3f}", f"{payload['change']:+.1%} (best step {record['best_step']})"),
        ("chat / training", f"{chat_seconds:.0f} s / {record['seconds']:.0f} s",
         f"{record['seconds_per_step']:.1f} s/step, load {load_before[0]:.1f}"),
    ]
    report("persona train --from-history on the liked replies of the distilled card", rows, payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--init", default="text", choices=("text", "vocab", "random"))
    parser.add_argument("--limit", type=int, default=40, help="Teacher prompts (20%% held out).")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--work", type=Path, help="Keep the data dir here (default: a temporary one).")
    parser.add_argument("--teacher-from", type=Path, help="A distilled persona folder whose teacher replies to reuse.")
    parser.add_argument("--learn-from-use", action="store_true",
                        help="After a kept run (--work): chat, rate, train --from-history (--steps).")
    parser.add_argument("--chat-as-card", action="store_true",
                        help="With --learn-from-use: chat with the card persona, not the soft prompt.")
    parser.add_argument("--json", action="store_true", help="Only the JSON object.")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="chatbot-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CHATBOT_DATA_DIR": str(work / "data"), "CHATBOT_DB": str(work / "chat.db"),
           "CHATBOT_USER_NAME": "Sam"}
    if args.learn_from_use:
        if args.work is None or not (work / "data" / "personas" / STUDENT).is_dir():
            parser.error(f"--learn-from-use needs --work DIR of an earlier run (with its {STUDENT})")
        return learn_from_use(work, env, args)
    card = work / "granny.json"
    card.write_text(json.dumps(CARD, indent=1), encoding="utf-8")
    load_before = os.getloadavg()
    started = time.perf_counter()
    cli(env, "persona", "import", str(card), "--force")
    folder = work / "data" / "personas" / STUDENT
    distill = ["persona", "distill", TEACHER, "--name", STUDENT, "--steps", str(args.steps), "--lr", str(args.lr),
               "--virtual-tokens", str(args.virtual_tokens), "--batch-size", str(args.batch_size), "--init", args.init,
               "--limit", str(args.limit), "--max-new-tokens", str(args.max_new_tokens)]
    if args.teacher_from is not None:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        shutil.copyfile(args.teacher_from / "data.jsonl", folder / "data.jsonl")
        distill.append("--resume")  # the replies are there, no checkpoint: training starts afresh
    cli(env, *distill)
    seconds = time.perf_counter() - started
    record = json.loads((folder / "soft_prompt" / "training.json").read_text())
    ev = record["evaluation"]
    payload = {
        "settings": {k: record["config"][k] for k in ("virtual_tokens", "steps", "lr", "batch_size", "init", "heldout")},
        "teacher_prompts": args.limit,
        "teacher_reused_from": str(args.teacher_from) if args.teacher_from else None,
        "evaluation": ev,
        "best_step": record["best_step"],
        "teacher_seconds": record.get("teacher_seconds"),
        "train_seconds": record["seconds"],
        "seconds_per_step": record["seconds_per_step"],
        "wall_seconds": round(seconds, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "work": str(work),
    }
    if args.json:
        print(json.dumps(payload, indent=1))
    else:
        report("persona distill of a ~1,000-token character card", distill_rows(record, load_before[0]), payload)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def distill_rows(record: dict, load: float) -> list[tuple[str, str, str]]:
    ev = record["evaluation"]
    soft_ok = ev["soft_vs_text"] is not None and ev["soft_vs_text"] <= 0.05
    fewer_ok = ev["fewer_prompt_tokens"] is not None and ev["fewer_prompt_tokens"] >= 0.9
    return [
        ("prompt tokens per turn: card as text", str(ev["teacher_prompt_tokens"]), ""),
        ("prompt tokens per turn: soft prompt", str(ev["soft_prompt_tokens"]),
         f"{ev['fewer_prompt_tokens']:.1%} fewer (target >= 90%: {'met' if fewer_ok else 'missed'})"),
        (f"held-out NLL, no persona ({ev['n_heldout_replies']} replies)", f"{ev['nll_none']:.3f}", ""),
        ("held-out NLL, card as text", f"{ev['nll_teacher_text']:.3f}", ""),
        ("held-out NLL, soft prompt", f"{ev['nll_soft_prompt']:.3f}",
         f"{ev['soft_vs_text']:+.1%} against the card (target <= +5%: {'met' if soft_ok else 'missed'})"),
        (f"attribution ({len(ev['attribution_candidates'])} personas, the card left out)",
         f"{ev['attribution_accuracy']:.0%}", ", ".join(f"{k} {v}" for k, v in ev["attributed_to"].items())),
        ("teacher replies / training", f"{record.get('teacher_seconds') or 0:.0f} s / {record['seconds']:.0f} s",
         f"{record['seconds_per_step']:.1f} s/step, best step {record['best_step']}, load {load:.1f}"),
    ]


if __name__ == "__main__":
    main()
