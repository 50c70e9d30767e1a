"""`chatbot history rerun ID --persona X`: every user message of a saved conversation answered
again under another persona (or model: the global `--model`), as a new branch beside the old one.

The first question is sent again as a sibling of the branch's first question (so anything before
it, an opening message, is shared); each later question follows the new persona's reply to the
one before. The TUI shows the new branch as any sibling; `history show --leaf` prints it.
"""

from __future__ import annotations

import sys

import typer

from chatbot.cli.history import ConversationId, conversation_id_of, history_app, show_text
from chatbot.cli.state import state_of
from chatbot.errors import UserError


@history_app.command()
def rerun(
    ctx: typer.Context,
    conversation: str = ConversationId,
    persona: str = typer.Option(..., "--persona", "-p", help="Answer under this persona."),
    leaf: int | None = typer.Option(None, "--leaf", help="Rerun the branch ending at this message (default: the latest)."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed of every reply (default: greedy)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Length of each reply."),
) -> None:
    """Answer every user message of a conversation again under another persona, as a new branch
    (greedy unless --seed); prints the replies and the new branch's leaf id."""
    from chatbot.cli import options
    from chatbot.session import ChatSession

    state = state_of(ctx)
    store = state.store(create=False)
    conversation_id = conversation_id_of(store, conversation)
    questions = [m for m in store.active_branch(conversation_id, leaf) if m.role == "user"]
    if not questions:
        raise UserError(f"conversation {conversation_id} has no user message to answer again")
    installed = state.persona(persona)
    overrides = {"max_new_tokens": max_new_tokens, "seed": seed}
    if seed is None:
        overrides["temperature"] = 0.0
    params = options.sampling_params(state.settings, installed, **overrides)
    session = ChatSession(state.runtime(), state.settings, installed, store, conversation_id)
    session.branch_before(questions[0].id)
    leaf_id = None
    for question in questions:
        show_text(f"user> {question.content}\n{installed.persona.name}> ")
        reply = session.send(question.content, params)
        for delta in reply:
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if reply.save_error:
            raise UserError(reply.save_error)
        if reply.status != "complete":
            raise UserError(f"the reply to message {question.id} ended {reply.status}; the new branch stops there")
        leaf_id = reply.message_id
    print(f"rerun under '{installed.persona.name}' as a new branch of conversation {conversation_id}, "
          f"ending at message {leaf_id} (history show {conversation_id} --leaf {leaf_id})", file=sys.stderr)
    print(leaf_id)

