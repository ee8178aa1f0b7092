"""The device choices a reading of the CUDA paths found wrong, shown where a CPU can show them: analyses and
comparisons honour --device (auto picks the accelerator, an absent one is one line), a resumed optimiser keeps
this device's implementation (tests/test_train_units.py), and the CUDA-only settings are decided up front."""

from __future__ import annotations

import pytest
import torch

from grokscope import runtime


@pytest.mark.parametrize("device, message", [("cuda", "no CUDA device"), ("gpu", "unknown device")])
def test_analyze_and_compare_refuse_an_absent_device_in_one_line(cli, trained, device, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, _ = trained
    for args in (["analyze", root / "gpt", "--analyses", "regime"], ["compare", f"{root / 'gpt'}@0",
                                                                       f"{root / 'gpt'}@last"]):
        code, _, err = cli(*args, "--device", device)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], err


def test_auto_is_the_default_and_picks_what_the_machine_has(monkeypatch, cli, trained):
    """A study passes no --device to its analyses: the default must be auto, so they run on the GPU when there is
    one (here: the choice is recorded by a stand-in for the analysis)."""
    import grokscope.analysis.run_analysis as ra

    seen = {}

    def fake(run, steps, probes, analyses, data, device):
        seen["device"] = device
        return {}
    monkeypatch.setattr(ra, "analyze", fake)
    root, _ = trained
    assert cli("analyze", root / "gpt")[0] == 0
    assert seen["device"] == runtime.pick_device("auto")
    monkeypatch.setattr(runtime, "pick_device", lambda d: "cuda" if d == "auto" else d)
    assert cli("analyze", root / "gpt")[0] == 0 and seen["device"] == "cuda"


def test_cuda_training_allows_tf32_and_restores_the_callers_setting(monkeypatch, tmp_path):
    """TF32 for fp32 matmuls while a CUDA run trains, and the caller's setting back afterwards (analyses that follow
    in one process compare with the CPU's full fp32; a notebook's own code keeps its precision), even when training
    fails, and whichever of torch's two APIs the caller used (reading the old flag raises after the new one was
    set); the trainer, alone or stacked, trains inside it. torch keeps these flags on a CPU build too."""
    from grokscope import api
    from grokscope.training.runspec import RunSpec

    matmul = torch.backends.cuda.matmul
    key, on, off = ("fp32_precision", "tf32", "ieee") if hasattr(matmul, "fp32_precision") else \
        ("allow_tf32", True, False)
    monkeypatch.setattr(matmul, key, off)
    with runtime.training_matmuls("cuda"):
        assert getattr(matmul, key) == on
    assert getattr(matmul, key) == off
    with pytest.raises(KeyboardInterrupt), runtime.training_matmuls("cuda"):
        raise KeyboardInterrupt
    assert getattr(matmul, key) == off
    with runtime.training_matmuls("cpu"):
        assert getattr(matmul, key) == off  # a CPU run leaves CUDA's settings alone
    with runtime.matmul_precision("cuda", tf32=False):
        assert getattr(matmul, key) == off
    if key == "fp32_precision":  # a caller on the new, backend-wide API
        before = torch.backends.fp32_precision
        try:
            torch.backends.fp32_precision = "tf32"
            callers = matmul.fp32_precision
            with runtime.training_matmuls("cuda"):
                assert matmul.fp32_precision == "tf32"
                with runtime.matmul_precision("cuda", tf32=False):
                    assert matmul.fp32_precision == "ieee"
            assert matmul.fp32_precision == callers
        finally:
            torch.backends.fp32_precision = before
    entered = []
    real = runtime.training_matmuls

    def recording(device):
        entered.append(device)
        return real(device)
    monkeypatch.setattr(runtime, "training_matmuls", recording)
    api.build_data(tmp_path / "d", preset="smoke")
    sets = ["train.max_steps=2", "train.eval_every=2", "train.threads=1"]
    api.train(tmp_path / "d", tmp_path / "alone", "gpt", "smoke", sets, quiet=True)
    api.train(spec=[RunSpec.build(tmp_path / "d", tmp_path / f"s{i}", "gpt", "smoke", [*sets, f"train.seed={i}"],
                                  quiet=True) for i in range(2)])
    assert entered == ["cpu", "cpu"]  # one run alone, one stack


def test_precision_is_checked_against_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.resolve_precision("bf16", "cuda")[0] == "fp16"  # a GPU without bf16 (before Ampere)
    assert runtime.resolve_precision("fp16", "cpu")[0] == "bf16"
    assert runtime.resolve_precision("bf16", "cpu") == ("bf16", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.resolve_precision("bf16", "cuda") == ("bf16", None)
    # A CPU without native bf16 (AVX2 only) emulates it many times slower than fp32: fp32 instead, with a note.
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    precision, note = runtime.resolve_precision("bf16", "cpu")
    assert precision == "fp32" and "no native bf16" in note
    assert runtime.resolve_precision("fp16", "cpu")[0] == "fp32"
    assert runtime.resolve_precision("fp32", "cpu") == ("fp32", None)
    assert runtime.resolve_precision("bf16", "cuda") == ("bf16", None)  # a GPU's bf16 does not depend on the CPU


def test_a_bf16_run_on_a_cpu_without_it_trains_and_records_fp32(monkeypatch, tmp_path, smoke_data, capsys):
    """The fallback reaches the run: its config.yaml records the precision it trained with."""
    from grokscope import api, artifacts

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    api.train(smoke_data, tmp_path / "r", "gpt", "smoke", ["train.max_steps=2", "train.eval_every=2",
                                                         "train.precision=bf16", "train.threads=1"], quiet=True)
    assert artifacts.read_config(tmp_path / "r")["train"]["precision"] == "fp32"
    assert "no native bf16" in capsys.readouterr().out


def test_a_cpu_stacked_run_never_touches_cuda(monkeypatch):
    """A stacked run switches to its own RNG stream before each step: on a CPU run that stream has no CUDA part."""
    from grokscope.models.registry import build_model, model_config
    from grokscope.training.config import TrainConfig
    from grokscope.training.state import TrainState

    def no_cuda(*_a, **_k):
        raise AssertionError("a CPU run created a CUDA context")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    monkeypatch.setattr(torch.cuda, "get_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", no_cuda)
    state = TrainState(build_model(model_config("gpt", "smoke", d_vocab=20)), TrainConfig(), 100, "cpu")
    state.keep_rng()
    state.use_rng()
    assert state.rng[1] is None


def test_an_fp16_step_the_scaler_skipped_leaves_the_loss_mean_alone():
    """A GradScaler step skipped for an overflow must not put its inf loss into the mean that the next evaluation
    checks (which would stop the run as non-finite); a run whose every step overflows still stops."""
    from grokscope.models.registry import build_model, model_config
    from grokscope.training.config import TrainConfig
    from grokscope.training.state import NonFiniteLoss, TrainState
    from grokscope.training.step import train_step

    model = build_model(model_config("gpt", "smoke", d_vocab=20))
    cfg = TrainConfig(precision="fp32")
    state = TrainState(model, cfg, 100, "cpu")
    state.scaler = torch.amp.GradScaler("cpu")  # stands for the CUDA fp16 scaler: the same skip logic

    def step(loss: float) -> None:
        def forward_backward(states, batches):  # the pass's result: an overflow shows as inf gradients
            state.scaler.scale(torch.ones((), requires_grad=True))  # initialises the scale
            for p in model.parameters():
                p.grad = torch.full_like(p, loss)
            return [torch.tensor(loss)]
        train_step([state], [None], forward_backward)
    step(2.0)
    step(float("inf"))
    step(4.0)
    assert state.take_train_loss() == 3.0
    step(float("inf"))
    with pytest.raises(NonFiniteLoss):
        state.take_train_loss()


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten operations dispatched (a stand-in for kernel launches)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _model_with_grads(seed: int):
    from grokscope.models.registry import build_model, model_config

    torch.manual_seed(seed)
    model = build_model(model_config("gpt", "micro", d_vocab=30))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


def test_grokfast_and_ema_take_a_few_multi_tensor_ops_with_the_same_bits():
    """Grokfast (without a GradScaler) and the EMA run a few multi-tensor ops instead of a few per tensor, and give
    the same bits as the per-tensor formulas."""
    from grokscope.training.optim import EMA, Grokfast

    fast, ref = Grokfast(0.9, 2.0), Grokfast(0.9, 2.0)
    a, b = _model_with_grads(0), _model_with_grads(0)
    n_tensors = len(list(a.parameters()))
    for step in range(3):
        for p, q in zip(a.parameters(), b.parameters()):
            p.grad = torch.randn_like(p, generator=torch.Generator().manual_seed(step))
            q.grad = p.grad.clone()
        with _CountOps() as ops:
            fast.apply(a, guard=False)
        ref.apply(b, guard=True)
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))
        if step:
            assert ops.count <= 8 < n_tensors  # mul, add and add: one each for every gradient
    assert all(torch.equal(fast.ema[k], ref.ema[k]) for k in ref.ema)
    ema = EMA(a, 0.99)
    reference = {k: v.clone() for k, v in ema.shadow.items()}
    for p in a.parameters():
        p.data.add_(1.0)
    with _CountOps() as ops:
        ema.update(a)
    weights = a.state_dict()
    assert all(torch.equal(ema.shadow[k], reference[k].lerp(weights[k].float(), 0.01)) for k in reference)
    assert ops.count <= 3 + len(reference)  # the state dict's views, then one lerp for every tensor


def test_a_stacks_grokfast_and_clipping_take_a_few_ops_for_all_runs_with_torchs_bits():
    """Stacked runs (the vmap backend) filter their gradients together: Grokfast as three multi-tensor ops for
    every run sharing (alpha, lambda), clipping as one multi-tensor norm for all and one scale per run. Each run's
    gradients and average equal the per-run reference bit for bit: the guarded Grokfast formula and torch's
    clip_grad_norm_, with one run clipped, one not at all and one with other Grokfast settings; then runs with
    limits of their own, and a run with a gradient missing (torch clips such runs one by one)."""
    from grokscope.training.optim import Grokfast, clip_grad_norms

    settings = [(0.9, 2.0), (0.9, 2.0), (0.5, 1.0)]
    scales = [10.0, 1e-4, 1.0]  # at max_norm 1: run 0 is clipped, run 1 is not
    cases = [[1.0] * 3] * 3 + [[0.05, 1e9, 1.0], [0.5, 0.5, 2.0]]
    ours, ref = [_model_with_grads(k) for k in range(3)], [_model_with_grads(k) for k in range(3)]
    fast, slow = [Grokfast(*a) for a in settings], [Grokfast(*a) for a in settings]
    n_tensors = len(list(ours[0].parameters()))
    for step, max_norms in enumerate(cases):
        gen = torch.Generator().manual_seed(step)
        for a, b, scale in zip(ours, ref, scales):
            for p, q in zip(a.parameters(), b.parameters()):
                p.grad = torch.randn(p.shape, generator=gen) * scale
                q.grad = p.grad.clone()
        if step == len(cases) - 1:
            next(ours[1].parameters()).grad = next(ref[1].parameters()).grad = None
        with _CountOps() as ops:
            Grokfast.filter([(f, m, False) for f, m in zip(fast, ours)])
        if step:  # (the first step starts each average at its gradients: a copy per tensor)
            assert ops.count <= 6 < n_tensors  # mul, add, add per (alpha, lambda): two settings
        with _CountOps() as ops:
            clip_grad_norms([list(m.parameters()) for m in ours], max_norms)
        if step < 3:  # one norm for all, the per-run totals and coefficients, then a view and a scale per run
            assert ops.count <= 9 + 2 * len(ours) < n_tensors
        if step == 2:
            norms = [torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.parameters()])) for m in ours]
            assert 0.999 < norms[0] < 1.001 and norms[1] < 0.5  # one run was clipped to 1, one was under it
        for f, m, max_norm in zip(slow, ref, max_norms):
            f.apply(m, guard=True)
            torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm)
        for a, b in zip(ours, ref):
            assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters())
                       if q.grad is not None)
    for f, g in zip(fast, slow):
        assert all(torch.equal(f.ema[k], g.ema[k]) for k in g.ema)


def test_the_compiled_step_keeps_static_shapes_when_the_last_batch_is_short(monkeypatch):
    """The epoch's shorter last batch must not turn the compiled step into a dynamic-shape graph for the full
    batches that follow (recorded with a compile backend that notes every graph's input shapes)."""
    from grokscope.training import step as step_module
    from grokscope.data.encoding import training_set
    from grokscope.data.build import build_dataset
    from grokscope.data.config import DATA_PRESETS
    from grokscope.models.registry import build_model, model_config
    from grokscope.training.config import TrainConfig
    from grokscope.training.state import TrainState

    graphs = []

    def recording(gm, example_inputs):
        graphs.append([tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)] +
                      [x for x in example_inputs if isinstance(x, torch.SymInt)])
        return gm.forward
    real_compile = torch.compile
    monkeypatch.setattr(step_module.torch, "compile", lambda fn, **kw: real_compile(fn, backend=recording, **kw))
    torch._dynamo.reset()
    ds = build_dataset(DATA_PRESETS["smoke"])
    model = build_model(model_config("gpt", "smoke", d_vocab=ds.vocab.d_vocab))
    cfg = TrainConfig(model_config="smoke", precision="fp32", compile=True)
    state = TrainState(model, cfg, 100, "cpu")
    forward_backward = step_module.LoopPass([state], max_steps=0)
    data = training_set(ds)
    for size in (16, 16, 5, 16, 16):
        step_module.train_step([state], [data.take(torch.arange(size))], forward_backward)
        state.loop.step += 1
    torch._dynamo.reset()
    assert len(graphs) == 2, graphs  # one static graph for the full batch, one for the short one
    assert not any(isinstance(x, torch.SymInt) for g in graphs for x in g)


def test_signsgd_under_a_grad_scaler_never_syncs_and_skips_an_overflow(monkeypatch):
    """The trm's puzzle vector is trained by SignSGD; under fp16 the GradScaler used to read found_inf with .item()
    every step (SignSGD had no scaler-aware path). Shown with the CPU GradScaler, which takes the same path."""
    from grokscope.training.optim import SignSGD

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = SignSGD([p], lr=0.1, weight_decay=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)

    def no_sync(self):
        raise AssertionError("a host synchronisation (.item()) in the optimiser step")
    scaler.scale((p * torch.tensor([1.0, -1.0, 2.0])).sum()).backward()
    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    scaler.step(opt)
    monkeypatch.undo()
    expected = torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.05) - 0.1 * torch.tensor([1.0, -1.0, 1.0])
    assert torch.equal(p.detach(), expected)
    scaler.update()
    before = p.detach().clone()
    opt.zero_grad()
    scaler.scale((p * torch.tensor([float("inf"), 1.0, 1.0])).sum()).backward()
    scaler.step(opt)
    assert torch.equal(p.detach(), before)  # the overflow step is skipped


def test_the_plan_times_a_run_in_the_precision_it_will_train_in(monkeypatch):
    """`--plan` probes each run as the trainer will run it: a bf16 recipe on a CPU without bf16 in fp32 (timed in
    emulated bf16 it was estimated 9x too long)."""
    from grokscope.config import from_dict
    from grokscope.studies.estimate import Estimator
    from grokscope.studies.plan import plan
    from grokscope.studies.spec import load_spec
    from grokscope.training.config import TrainConfig

    jobs = plan(load_spec("smoke", ["train.precision=bf16"]), "/tmp/x")
    train = next(j for j in jobs if j.name == "train gpt_natural")
    probed = []
    monkeypatch.setattr(Estimator, "_probe", lambda self, model_cfg, cfg, ds, rows: probed.append(cfg.precision)
                        or 1.0)
    est = Estimator(jobs, "cpu")
    for has_bf16, expected in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda has=has_bf16: has)
        est.probes.clear()
        est.cost("gpt", train.resolved["model"], from_dict(TrainConfig, train.resolved["train"], "t"),
                 est.dataset(train.resolved["data"]))
        assert probed[-1] == expected


def test_a_run_started_in_bf16_continues_in_it_on_a_cpu_without_it(monkeypatch, tmp_path, smoke_data, capsys):
    """A run recorded in bf16 (started where bf16 is native) resumes on a CPU without it in bf16, with a note: the
    fallback would make its config differ and refuse the resume."""
    from grokscope import api, artifacts

    sets = ["train.eval_every=2", "train.precision=bf16", "train.threads=1"]
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    api.train(smoke_data, tmp_path / "r", "gpt", "smoke", [*sets, "train.max_steps=2"], quiet=True)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    summary = api.train(smoke_data, tmp_path / "r", "gpt", "smoke", [*sets, "train.max_steps=4"], resume=True,
                        quiet=True)
    assert summary["final_step"] == 4 and artifacts.read_config(tmp_path / "r")["train"]["precision"] == "bf16"
    assert "was started in bf16" in capsys.readouterr().out
