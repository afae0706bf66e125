"""ds4 plan (docs/placement.md): where a model's weights would go, on the
full-size Flash shape (the ds4-q2 file of issue 21) as a shape and as a
header-only synth file (86.7 GB apparent, no weight bytes on disk), on
several GPUs, with the placement flags, and its refusals."""
import os

from conftest import run


def plan(ds4_bin, *args, check=True):
    return run([ds4_bin, "plan", *args], check=check)


def body(out):
    """The plan without its first line (which names the file or shape)."""
    return out.split("\n", 1)[1]


def test_flash_q2_on_an_h100(ds4_bin):
    p = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "80552.2", "--host-mem", "24000")
    out = p.stdout
    assert "plan for shape flash with recipe ds4-q2 (no file)" in out
    assert "82697.7 MiB of weights on a device: dense parts 8393.7 MiB, routed experts 74304.0 MiB" in out
    assert "routed experts of layers 0-40" in out
    assert "host: 3456.0 MiB of 24000.0 MiB usable: routed experts of layers 41-42" in out
    assert "41 of 43 layers fit" in out
    assert "total: " in out and "3456.0 MiB in host memory" in out
    # A CUDA build counts the staging it keeps to stream host experts in for
    # prefill (two 64 MiB buffers for Flash q2); 41 layers still fit.
    if "as the CUDA backend takes them" in out:
        assert "devices: 128.0 MiB of each device set aside (in its scratch below)" in out


def test_header_only_file_plans_like_the_shape(ds4_bin, tmp_path):
    f = tmp_path / "flash-q2.gguf"
    run([ds4_bin, "synth", "--shape", "flash", "--recipe", "ds4-q2", "--header-only", "-o", str(f)])
    st = os.stat(f)
    assert st.st_size > 86714775900  # every weight byte is addressable...
    assert st.st_blocks * 512 < 64 << 20  # ...and none was written
    args = ["--gpu-mem", "80552.2", "--host-mem", "24000", "--split-layer-experts"]
    from_file = plan(ds4_bin, "-m", str(f), *args).stdout
    from_shape = plan(ds4_bin, "--shape", "flash", *args).stdout
    assert from_file.startswith(f"plan for {f}\n")
    assert body(from_file) == body(from_shape)
    assert "routed experts 0-" in from_file and "of layer 41" in from_file


def test_two_and_four_gpus(ds4_bin):
    two = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "80552.2,80552.2", "--host-mem", "24000").stdout
    assert "the model does not fit cuda0 alone, so all 2 devices are used" in two
    assert "routed experts 0-127 of layers 0-42" in two
    assert "routed experts 128-255 of layers 0-42" in two
    assert "replicated on each of the 2 devices" in two
    assert "0.0 MiB in host memory" in two
    four = plan(ds4_bin, "--shape", "flash", "--gpus", "0,1,2,3", "--gpu-mem", "40000", "--host-mem", "24000").stdout
    for k, (a, b) in enumerate([(0, 63), (64, 127), (128, 191), (192, 255)]):
        assert f"routed experts {a}-{b} of layers 0-42" in four.split(f"cuda{k}:")[1].split("\n")[0]
    one = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "100000,100000", "--host-mem", "24000").stdout
    assert "the model fits cuda0 alone" in one and "cuda1:" not in one


def test_flags(ds4_bin):
    moe = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "80552.2", "--host-mem", "90000", "--cpu-moe").stdout
    assert "host: 74304.0 MiB of 90000.0 MiB usable: routed experts of layers 0-42" in moe
    gle = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "80552.2", "--host-mem", "90000",
               "--gpu-layers-experts", "10").stdout
    assert "routed experts of layers 0-9" in gle and "routed experts of layers 10-42" in gle
    ot = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "100000", "--host-mem", "90000",
              "--override-tensor", r"blk\.0\.ffn_.*_exps=cpu",
              "--override-tensor", r"blk\..*_exps=cuda0").stdout
    assert "host: 1728.0 MiB of 90000.0 MiB usable: by --override-tensor: blk.0.ffn_gate_exps.weight, " \
           "blk.0.ffn_up_exps.weight, blk.0.ffn_down_exps.weight" in ot
    tiny = plan(ds4_bin, "--shape", "tiny", "--gpu-mem", "100", "--tensors", "--host-mem", "1000",
                "--gpu-reserve", "0").stdout
    lines = [l for l in tiny.split("tensors:\n")[1].splitlines() if l.strip()]
    assert any("blk.3.ffn_up_exps.weight" in l and "experts 0-7" in l and "cuda0" in l for l in lines)
    assert any(l.split()[0] == "token_embd.weight" and "cuda0" in l for l in lines)


def test_refusals(ds4_bin, tmp_path):
    p = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "80552.2", "--host-mem", "1000", check=False)
    assert p.returncode == 1
    assert "3456.0 MiB of weights must stay in host memory, which has 1000.0 MiB usable (2456.0 MiB short)" in p.stderr
    p = plan(ds4_bin, "--shape", "flash", "--gpu-mem", "8000", check=False)
    assert p.returncode == 1 and "the dense parts" in p.stderr and "need 8393.7 MiB on cuda0" in p.stderr
    p = plan(ds4_bin, "--shape", "tiny", "--gpu-mem", "100", "--override-tensor", "x=gpu0", check=False)
    assert p.returncode == 1 and "unknown device 'gpu0'" in p.stderr
    p = plan(ds4_bin, "--shape", "tiny", "--gpu-mem", "1,2", "--gpus", "0,1,2", check=False)
    assert p.returncode == 1 and "gives 2 sizes for 3 devices" in p.stderr
    p = plan(ds4_bin, "--shape", "tiny", "-m", str(tmp_path / "x.gguf"), "--gpu-mem", "100", check=False)
    assert p.returncode == 1 and "-m FILE or --shape, not both" in p.stderr
    # Without --gpu-mem it asks the GPUs; where there are none it says what to pass.
    p = plan(ds4_bin, "--shape", "tiny", check=False)
    if p.returncode != 0:
        assert "--gpu-mem MIB[,MIB...]" in p.stderr
    else:
        assert "device memory free now (cudaMemGetInfo)" in p.stdout and "cuda0" in p.stdout
