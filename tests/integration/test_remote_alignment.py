"""Alignment profiling against a real ``python -m llama_cpp.server`` (the F32 target),
compared with the local-GGUF path on the same prompts; and a server killed mid-profile.

Both paths sample each prompt with its own seed through llama.cpp's sampler chain, so at
T > 0 the server's trajectory is the local one token for token and the comparison is
exact: the local α must lie inside the remote α's bounds (the server returns only the
top-20 log-probs of the raw distribution, so remote α at T > 0 is an interval).

llama-cpp-python computes log-probs in Python over the whole 262k vocabulary for every
generated token, so there are two prompts of six tokens, one server for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _llama_server import LlamaServer

from configspec.backends.llamacpp import LlamaCppTokenizer
from configspec.backends.models import PreparedFamily
from configspec.backends.openai_http import RetryPolicy
from configspec.errors import BackendUnavailable
from configspec.profiling.alignment import AlignmentSettings, profile_alignment
from configspec.profiling.prompts import bundled_prompts, select_prompts
from configspec.profiling.reference import ReferenceSettings, cache_key, load_reference
from configspec.profiling.remote_reference import RemoteReferenceSource, fetch_references
from configspec.store import ProfileStore

pytestmark = pytest.mark.slow

TEMPERATURE = 0.8
SETTINGS = AlignmentSettings(
    n_tokens=6, temperatures=(0.0, TEMPERATURE), k_max=4, top_k=20, n_boot=300
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


@pytest.fixture(scope="module")
def tokenizer(model_family: PreparedFamily) -> LlamaCppTokenizer:
    return LlamaCppTokenizer(model_family.target_path, identity=model_family.target)


def test_remote_profile_agrees_with_local(
    model_family: PreparedFamily,
    server: LlamaServer,
    tokenizer: LlamaCppTokenizer,
    tmp_path: Path,
) -> None:
    code, summary = select_prompts(bundled_prompts(None), 1)[1::2]  # n-gram has matches
    prompts = [code, summary]
    drafters = [str(model_family.drafter_path("Q8_0")), "ngram"]
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

    # greedy and sampled references are token-identical to the local path
    source = RemoteReferenceSource(server.url, tokenizer)
    source.close()
    sha = model_family.target.file_sha256
    assert sha is not None
    for t in SETTINGS.temperatures:
        ref_settings = SETTINGS.reference(t)
        for p in prompts:
            mine = load_reference(local_store, cache_key(sha, p, ref_settings), p)
            key = cache_key(source.cache_identity, p, ref_settings)
            theirs = load_reference(remote_store, key, p)
            assert mine is not None and theirs is not None
            assert theirs.prompt_tokens.tolist() == mine.prompt_tokens.tolist()
            assert theirs.tokens.tolist() == mine.tokens.tolist(), (p.id, t)

    alpha = {
        (e.drafter, e.temperature): e.alpha for e in remote.profile.entries if e.domain == "all"
    }
    n_refs = len(prompts) * len(SETTINGS.temperatures)
    print(  # shown with -s: the agreement table of the report
        f"\nreference s/prompt: local {local.reference_s / n_refs:.2f}, remote "
        f"{remote.reference_s / n_refs:.2f}\n"
        "drafter T local_alpha local_CI remote_alpha [lower, upper] diff_pp"
    )
    n_checked = 0
    for e in local.profile.entries:
        if e.domain != "all":
            continue
        got, want = alpha[(e.drafter, e.temperature)], e.alpha
        assert got is not None and want is not None
        lo, hi = remote.alpha_bounds[(e.drafter, "all", e.temperature)]
        print(
            f"{e.drafter} {e.temperature:g} {want.mean:.4f} {want.low:.3f}-{want.high:.3f} "
            f"{got.mean:.4f} [{lo:.4f}, {hi:.4f}] {100 * (got.mean - want.mean):+.2f}"
        )
        if e.temperature == 0.0:  # greedy: a point, the same as the local one
            assert lo == hi == pytest.approx(got.mean)
            assert abs(got.mean - want.mean) <= 0.005, e.drafter
        else:  # top-20 of the raw distribution: an interval holding the local α
            assert got.mean == pytest.approx(hi)  # stored at the upper bound
            assert lo - 1e-6 <= want.mean <= hi + 1e-6, (e.drafter, want.mean, lo, hi)
            assert lo <= want.high and want.low <= hi  # overlaps the local bootstrap CI
            assert hi - lo < 0.2
        n_checked += 1
    assert n_checked == len(drafters) * len(SETTINGS.temperatures)


def test_server_killed_mid_profile_resumes_after_restart(
    server: LlamaServer, tokenizer: LlamaCppTokenizer, tmp_path: Path
) -> None:
    srv, tok = server, tokenizer  # the module's server: killed here, then restarted
    try:
        prompts = select_prompts(bundled_prompts(None), 1)[:2]
        settings = ReferenceSettings(n_tokens=2)
        store = ProfileStore(tmp_path / "p")
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
        assert "1 of 2 references are cached; rerun the same command to resume" in msg
        assert "\n" not in msg
        srv.start()  # same port, as an operator restarting the server
        source = RemoteReferenceSource(srv.url, tok, retry=retry)
        starts: list[tuple[int, int]] = []
        again = fetch_references(
            store, source, prompts, settings, on_start=lambda c, t: starts.append((c, t))
        )
        source.close()
        assert starts == [(1, 1)] and again.n_fetched == 1
        assert [r.prompt_id for r in again.references] == [p.id for p in prompts]
    finally:
        if srv.proc is None:  # leave the module's server running for the other tests
            srv.start()
