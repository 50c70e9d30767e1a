#!/usr/bin/env bash
# UNTESTED (no GPU machine was lent when it was written): the device check of docs/scale-out.md,
# "Soft prompts on vLLM". On a GPU machine with vLLM installed (it must already be there: the
# device machine reaches no registry) and the converted bundled model folder (MODEL_DIR: the
# folder `chatbot model info` names as its cache; fp32 safetensors + tokenizer), it
#   1. starts `vllm serve MODEL_DIR --enable-prompt-embeds` on 127.0.0.1,
#   2. asks it through `chatbot --engine openai` with a soft-prompt persona (cowboy), prompt
#      embeddings on: the reply must be non-empty and stored complete,
#   3. asks the same greedily on the local reference engine, and prints both replies' first words
#      (vLLM on GPU and torch on CPU differ in rounding: the first tokens should agree),
#   4. stops the server. Exit status 0 only if 2. passed.
set -euo pipefail
MODEL_DIR=${MODEL_DIR:?set MODEL_DIR to the converted model folder}
PORT=${PORT:-8011}
WORK=$(mktemp -d)
trap 'kill "$VLLM_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

python -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" --served-model-name smollm2 \
  --host 127.0.0.1 --port "$PORT" --enable-prompt-embeds --max-model-len 2048 --dtype float32 \
  >"$WORK/vllm.log" 2>&1 &
VLLM_PID=$!
for _ in $(seq 240); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  kill -0 "$VLLM_PID" 2>/dev/null || { tail -20 "$WORK/vllm.log"; exit 1; }
  sleep 1
done

export CHATBOT_DATA_DIR="$WORK/data" CHATBOT_DB="$WORK/chat.db" CHATBOT_MODEL="$MODEL_DIR"
remote=$(CHATBOT_BASE_URL="http://127.0.0.1:$PORT/v1" CHATBOT_REMOTE_MODEL=smollm2 CHATBOT_REMOTE_PROMPT_EMBEDS=1 \
  python -m chatbot --engine openai ask --persona cowboy --temperature 0 --max-new-tokens 24 --json "Who are you?")
local=$(python -m chatbot --engine reference ask --persona cowboy --temperature 0 --max-new-tokens 24 --json --no-save "Who are you?")
python - "$remote" "$local" <<'PY'
import json, sys
remote, local = (json.loads(a) for a in sys.argv[1:])
print("vLLM  :", remote["reply"][:80])
print("local :", local["reply"][:80])
print("vLLM stats:", remote["stats"])
assert remote["reply"].strip(), "vLLM gave an empty reply"
assert remote["stats"]["prefix_tokens"] > 0, "the soft prompt was not sent"
same = sum(1 for a, b in zip(remote["reply"].split(), local["reply"].split()) if a == b)
print(f"first words in common: {same}")
PY
