"""`ds4 bench`: one CSV row per context frontier with the §6.6 columns plus
weight GB/s and the prefill's TFLOP/s in the weight products; the frontiers
follow --step-incr / --step-mul."""
import csv
import io

import numpy as np
import pytest

from conftest import REPO, run
from test_run import make_model

COLUMNS = ["ctx_tokens", "prefill_tokens", "prefill_tps", "gen_tokens", "gen_tps", "kvcache_bytes", "weight_gbps",
           "prefill_tflops"]


@pytest.fixture(scope="module")
def model(ds4_bin, tmp_path_factory):
    return make_model(ds4_bin, tmp_path_factory)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("bench") / "prompt.txt"
    p.write_text((REPO / "docs/ARCHITECTURE.md").read_text())
    return str(p)


def experts(path):
    """gguf-py's reader of the file, with its experts used and in all."""
    import gguf
    rd = gguf.GGUFReader(path)
    arch = rd.fields["general.architecture"].contents()
    return rd, rd.fields[f"{arch}.expert_used_count"].contents(), rd.fields[f"{arch}.expert_count"].contents()


def prefill_macs(path):
    rd, used, total = experts(path)
    macs = 0.0
    for t in rd.tensors:
        shape = [int(d) for d in t.shape]
        if len(shape) < 2 or t.name == "token_embd.weight" or t.name.startswith("output") or "tid2eid" in t.name:
            continue
        n = float(np.prod(shape))
        if "_exps" in t.name:
            n *= used / total
        macs += n
    assert macs > 0
    return macs


def rows(out, columns=COLUMNS):
    r = list(csv.DictReader(io.StringIO(out)))
    assert r and list(r[0].keys()) == columns
    return r


def test_bench_step_incr(ds4_bin, model, text):
    p = run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "64", "--ctx-max", "160",
             "--step-incr", "48", "--gen-tokens", "4", "-t", "2"])
    r = rows(p.stdout)
    assert [int(x["ctx_tokens"]) for x in r] == [64, 112, 160]
    assert [int(x["prefill_tokens"]) for x in r] == [64, 48, 48]
    assert all(int(x["gen_tokens"]) == 4 for x in r)  # EOS is never chosen
    assert all(float(x["prefill_tps"]) > 0 and float(x["gen_tps"]) > 0 and float(x["weight_gbps"]) > 0 for x in r)
    # TFLOP/s = 2 * (multiply-adds of one token's weight products) * tok/s,
    # the count taken here from the file by gguf-py: every matrix but the
    # embedding and the head, routed experts at n_expert_used of n_expert.
    macs = prefill_macs(model)
    for x in r:
        want = 2 * macs * float(x["prefill_tps"]) / 1e12
        assert float(x["prefill_tflops"]) == pytest.approx(want, rel=2e-4)
    kv = [int(x["kvcache_bytes"]) for x in r]
    assert kv[0] < kv[1] < kv[2]  # compressed rows and history grow with the context
    print(p.stdout)


def test_bench_step_mul_and_csv_file(ds4_bin, model, text, tmp_path):
    out = tmp_path / "b.csv"
    run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "40", "--ctx-max", "100",
         "--step-mul", "1.5", "--gen-tokens", "2", "--csv", str(out), "-t", "2"])
    assert [int(x["ctx_tokens"]) for x in rows(out.read_text())] == [40, 60, 90, 100]


def test_bench_restores_state_after_each_frontier(ds4_bin, model, text):
    # Generating at frontier 30 and restoring leaves the same state at 50 as
    # going straight to 50: same snapshot size and prefill count there.
    direct = rows(run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "50", "--ctx-max", "50",
                       "--gen-tokens", "3", "-t", "2"]).stdout)
    stepped = rows(run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "30", "--ctx-max", "50",
                        "--step-incr", "20", "--gen-tokens", "3", "-t", "2"]).stdout)
    assert len(direct) == 1 and int(direct[0]["prefill_tokens"]) == 50
    assert [int(x["prefill_tokens"]) for x in stepped] == [30, 20]
    assert stepped[-1]["kvcache_bytes"] == direct[0]["kvcache_bytes"]


@pytest.mark.parametrize("args,msg", [
    (["--ctx-max", "100000"], "needs at least that many"),
    (["--ctx-max", "60", "--ctx-start", "0"], "invalid value for --ctx-start"),
    (["--ctx-max", "60", "--step-mul", "0.5"], "invalid value for --step-mul"),
    (["--ctx-max", "60", "--ctx-alloc", "10"], "invalid value for --ctx-alloc"),
])
def test_bench_bad_flags(ds4_bin, model, text, args, msg):
    if "--ctx-start" not in args:
        args = ["--ctx-start", "40", *args]
    p = run([ds4_bin, "bench", "-m", model, "--prompt-file", text, *args], check=False)
    assert p.returncode == 1 and msg in p.stderr


def test_bench_sequences_decode_together(ds4_bin, model, text):
    # --sequences 4: the usual columns plus four sequences decoding together
    # at each frontier through one batched forward per step.
    p = run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "40", "--ctx-max", "80",
             "--step-incr", "40", "--gen-tokens", "3", "--sequences", "4", "-t", "2"])
    r = rows(p.stdout, COLUMNS + ["sequences", "agg_gen_tps", "seq_gen_tps"])
    assert [int(x["ctx_tokens"]) for x in r] == [40, 80]
    for x in r:
        assert int(x["sequences"]) == 4
        agg, per = float(x["agg_gen_tps"]), float(x["seq_gen_tps"])
        assert agg > 0 and abs(per * 4 - agg) <= 0.01 * agg + 0.02
    print(p.stdout)


@pytest.mark.parametrize("bad", ["0", "-3", "5000"])
def test_bench_sequences_out_of_range(ds4_bin, model, text, bad):
    p = run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "40", "--ctx-max", "40",
             "--sequences", bad], check=False)
    assert p.returncode != 0 and "--sequences" in p.stderr


def test_bench_profile_splits_the_time_by_phase(ds4_bin, model, text):
    # --profile: after each prefill and each generation, a table of where the
    # backend's time went, by phase and layer kind, whose phases add up to
    # its total; the CSV on stdout is unchanged.
    p = run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "48", "--ctx-max", "48",
             "--gen-tokens", "4", "--profile", "-t", "2"])
    assert len(rows(p.stdout)) == 1
    err = p.stderr
    assert "ds4-bench: profile of prefill 0 -> 47" in err and "ds4-bench: profile of generation at 48" in err
    for table in err.split("ds4-bench: profile of ")[1:]:
        lines = table.splitlines()
        head = lines[1]
        assert "token rows in" in head and "wall" in head and "ms per row" in head
        body = {l.split()[0]: l.split() for l in lines[2:] if l.strip() and l.split()[0] != "phase"}
        assert {"hc_pre", "attn_proj", "attend", "attn_out", "router", "experts", "hc_post", "total"} <= set(body)
        total = float(body["total"][1])
        parts = sum(float(v[1]) for k, v in body.items() if k != "total")
        assert total > 0 and abs(parts - total) <= 0.01 * total + 0.005
        # The per-kind columns of the total add up to it too.
        assert abs(sum(float(x) for x in body["total"][2:]) - total) <= 0.01 * total + 0.005
    print(err)


def test_bench_prints_decode_bound(ds4_bin, model, text):
    # The bound line: the step's weight bytes (the same count as the header's
    # "MB of weights read per decoded token", recomputed here from the file by
    # gguf-py) at the read rate the backend measured, and the time and tok/s
    # that follow from them.
    import re
    p = run([ds4_bin, "bench", "-m", model, "--prompt-file", text, "--ctx-start", "32", "--ctx-max", "32",
             "--gen-tokens", "2", "-t", "2"])
    m = re.search(r"decode bound: ([0-9.]+) MB a token at the cpu backend's read rate of ([0-9.]+) GB/s "
                  r"\(measured now\) = ([0-9.]+) ms, ([0-9.]+) tok/s", p.stderr)
    assert m, p.stderr
    mb, gbps, ms, tps = (float(x) for x in m.groups())
    rd, used, total = experts(model)
    want = 0.0
    for t in rd.tensors:
        b = float(t.n_bytes)
        if "_exps" in t.name:
            want += b * used / total
        elif t.name == "token_embd.weight" or "tid2eid" in t.name:
            want += b / (int(t.shape[1]) if len(t.shape) > 1 else 1)
        else:
            want += b
    assert mb == pytest.approx(want / 1e6, abs=0.06)
    assert gbps > 0
    # The printed figures are rounded (MB and GB/s to 0.1, ms to 0.001, tok/s
    # to 0.1): compare within what that rounding allows.
    assert ms == pytest.approx(mb / gbps, rel=0.051 / mb + 0.051 / gbps + 1e-4, abs=6e-4)
    assert tps == pytest.approx(1e3 / ms, rel=6e-4 / ms + 1e-4, abs=0.06)
