#!/usr/bin/env bash
# Kill a llama_cpp.server in the middle of `configspec profile alignment -t URL`, show the
# one-line error, restart the server on the same port and rerun the same command: it
# resumes from the references already cached. Loopback only; stops what it starts.
#   PYTHONPATH=src bash benchmarks/remote_kill_resume.sh
set -u
PY=${PY:-python}
MODELS=${CONFIGSPEC_TEST_MODELS:-/work/.cache/configspec-test-models}/models
TARGET=$MODELS/gemma-3-270m-f32.gguf
OUT=$(mktemp -d)
PORT=$($PY -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
start_server() {
  $PY -m llama_cpp.server --model "$TARGET" --host 127.0.0.1 --port "$PORT" --n_ctx 256 \
    --n_threads 2 --logits_all true --verbose false >>"$OUT/server.log" 2>&1 &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; do sleep 0.5; done
}
CMD=($PY -m configspec profile alignment -t "http://127.0.0.1:$PORT" --tokenizer "$TARGET"
     -d "$MODELS/gemma-3-270m-f16.gguf" --per-domain 1 --tokens 6 -T 0 --concurrency 1
     --bootstrap 200 --profiles "$OUT/profiles")
start_server
"${CMD[@]}" >"$OUT/run1.out" 2>"$OUT/run1.err" &
RUN=$!
until [ "$(ls "$OUT/profiles/cache/alignment-reference" 2>/dev/null | wc -l)" -ge 2 ]; do sleep 0.5; done
kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null
echo "== server killed after $(ls "$OUT/profiles/cache/alignment-reference" | wc -l) references"
wait "$RUN"; echo "== first run exit code $?"
grep -v "^\s*$" "$OUT/run1.err" | grep -v "target reference" | tail -2
start_server
echo "== server restarted; same command again"
"${CMD[@]}" 2>&1 | grep -v "^\s*$" | tail -8
echo "== exit code ${PIPESTATUS[0]}"
kill "$SERVER"; wait "$SERVER" 2>/dev/null
rm -rf "$OUT"
