"""Alignment profiling against a real ``python -m llama_cpp.server`` (the F32 target),
compared with the local-GGUF path on the same prompts; and a server killed mid-profile.

llama-cpp-python computes log-probs over the whole 262k vocabulary in Python for every
generated token (~0.3-1 s each on this machine), so the prompts and references are short.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _llama_server import LlamaServer

from configspec.backends.llamacpp import LlamaCppTokenizer
from configspec.backends.models import PreparedFamily
from configspec.errors import BackendUnavailable
from configspec.profiling.alignment import AlignmentSettings, profile_alignment
from configspec.profiling.prompts import bundled_prompts, select_prompts
from configspec.profiling.reference import ReferenceSettings, cache_key, load_reference
from configspec.profiling.remote_reference import RemoteReferenceSource, fetch_references
from configspec.store import ProfileStore

pytestmark = pytest.mark.slow

TEMPERATURE = 0.8
SETTINGS = AlignmentSettings(
    n_tokens=10, temperatures=(0.0, TEMPERATURE), k_max=4, top_k=20, n_boot=300
)


@pytest.fixture(scope="module")
def server(
    model_family: PreparedFamily, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    srv = LlamaServer(model_family.target_path, tmp_path_factory.mktemp("srv") / "log", 256)
    try:
        srv.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield srv
    finally:
        srv.stop()


def test_remote_profile_agrees_with_local(
    model_family: PreparedFamily, server: LlamaServer, tmp_path: Path
) -> None:
    prompts = select_prompts(bundled_prompts(None), 1)  # one per domain
    drafters = [str(model_family.drafter_path("F16")), "ngram"]
    target = str(model_family.target_path)
    local_store, remote_store = ProfileStore(tmp_path / "local"), ProfileStore(tmp_path / "remote")
    local = profile_alignment(target, drafters, prompts, local_store, settings=SETTINGS)
    remote = profile_alignment(
        server.url, drafters, prompts, remote_store, settings=SETTINGS, tokenizer=target
    )
    assert remote.profile.target == local.profile.target == "gemma-3-270m-f32"
    assert remote.endpoint == server.url and remote.n_references_computed == 2 * len(prompts)
    server_info = remote.profile.provenance.settings["target_server"]
    assert server_info["tokenizer_checked"] is True
    assert server_info["token_id_prompts"] is False  # llama-cpp-python: text prompts
    assert server_info["logprobs_at_temperature"] == {f"{TEMPERATURE:g}": "raw"}

    # greedy references are token-identical to the local path
    tok = LlamaCppTokenizer(target, identity=model_family.target)
    source = RemoteReferenceSource(server.url, tok)
    source.close()
    greedy = ReferenceSettings(n_tokens=SETTINGS.n_tokens)
    sha = model_family.target.file_sha256
    assert sha is not None
    for p in prompts:
        mine = load_reference(local_store, cache_key(sha, p, greedy), p)
        theirs = load_reference(remote_store, cache_key(source.cache_identity, p, greedy), p)
        assert mine is not None and theirs is not None
        assert theirs.prompt_tokens.tolist() == mine.prompt_tokens.tolist()
        assert theirs.tokens.tolist() == mine.tokens.tolist(), p.id

    alpha = {
        (e.drafter, e.temperature): e.alpha for e in remote.profile.entries if e.domain == "all"
    }
    n_refs = len(prompts) * len(SETTINGS.temperatures)
    print(  # shown with -s: the agreement table of the report
        f"\nreference s/prompt: local {local.reference_s / n_refs:.2f}, remote "
        f"{remote.reference_s / n_refs:.2f}\ndrafter T local_alpha local_CI remote_alpha diff_pp"
    )
    outside: list[str] = []
    for e in local.profile.entries:
        if e.domain != "all":
            continue
        got, want = alpha[(e.drafter, e.temperature)], e.alpha
        assert got is not None and want is not None
        print(
            f"{e.drafter} {e.temperature:g} {want.mean:.4f} {want.low:.3f}-{want.high:.3f} "
            f"{got.mean:.4f} {100 * (got.mean - want.mean):+.2f} "
            f"bounds={remote.alpha_bounds[(e.drafter, 'all', e.temperature)]}"
        )
        if e.temperature == 0.0:  # same trajectory: within 0.5 pp
            assert abs(got.mean - want.mean) <= 0.005, e.drafter
        elif not want.low <= got.mean <= want.high:
            outside.append(f"{e.drafter} T={e.temperature:g}: {got.mean:.3f} vs {want}")
    model_drafter = next(d for d in remote.drafter_s if not d.startswith("ngram"))
    lo, hi = remote.alpha_bounds[(model_drafter, "all", TEMPERATURE)]
    assert 0.0 <= lo <= hi <= 1.0 and hi - lo < 0.2
    if outside:  # open: bench_remote_alignment measured F16 +3.9 pp, ngram +22 pp at T=0.8
        pytest.xfail("remote α at T>0 outside the local bootstrap CI: " + "; ".join(outside))


def test_server_killed_mid_profile_resumes_after_restart(
    model_family: PreparedFamily, tmp_path: Path
) -> None:
    srv = LlamaServer(model_family.target_path, tmp_path / "log", 256).start()
    try:
        tok = LlamaCppTokenizer(model_family.target_path, identity=model_family.target)
        prompts = select_prompts(bundled_prompts(None), 1)[:3]
        settings = ReferenceSettings(n_tokens=4)
        store = ProfileStore(tmp_path / "p")
        from configspec.backends.openai_http import RetryPolicy

        retry = RetryPolicy(attempts=3, backoff_s=0.5)
        source = RemoteReferenceSource(srv.url, tok, retry=retry)

        def kill_after_first(n: int) -> None:
            if n and srv.proc is not None:
                srv.kill()

        with pytest.raises(BackendUnavailable) as err:
            fetch_references(
                store, source, prompts, settings, concurrency=1, on_done=kill_after_first
            )
        source.close()
        msg = str(err.value)
        assert "1 of 3 references are cached; rerun the same command to resume" in msg
        assert "\n" not in msg
        srv.start()  # same port, as an operator restarting the server
        source = RemoteReferenceSource(srv.url, tok, retry=retry)
        starts: list[tuple[int, int]] = []
        again = fetch_references(
            store, source, prompts, settings, on_start=lambda c, t: starts.append((c, t))
        )
        source.close()
        assert starts == [(1, 2)] and again.n_fetched == 2
        assert [r.prompt_id for r in again.references] == [p.id for p in prompts]
    finally:
        srv.stop()
