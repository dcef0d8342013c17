"""Recording and reading a training run (deepvis.run): atomic snapshots, resuming, adopting, bad folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import deepvis
from deepvis.run import Run, RunError, open_run, step_of
from tests.conftest import NETS_FILE

GRAY = {"input": "1x28x28", "mean": [0.5], "std": [0.5]}
MODEL = f"{NETS_FILE}:GrayNet"


def _net(seed: int = 0):
    from deepvis.user_code import import_file

    torch.manual_seed(seed)
    return import_file(NETS_FILE).GrayNet()


def _probe() -> torch.Tensor:
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _record(path, steps=(0, 5, 10), **extra) -> list[dict[str, torch.Tensor]]:
    run = Run(path, MODEL, **GRAY, classes=[str(d) for d in range(10)], probe=_probe(), **extra)
    states = []
    for i, step in enumerate(steps):
        net = _net(i)
        states.append({k: v.clone() for k, v in net.state_dict().items()})
        run.snapshot(net, step=step, loss=1.0 / (i + 1), accuracy=torch.tensor(0.1 * i))
    return states


def test_a_run_keeps_each_snapshots_weights_and_scalars_and_builds_the_network_at_each_step(tmp_path):
    states = _record(tmp_path / "r")
    view = open_run(tmp_path / "r")
    assert view.steps == [0, 5, 10] and view.problems == ()
    assert view.scalars() == {"loss": [1.0, 0.5, pytest.approx(1 / 3)], "accuracy": [0.0, pytest.approx(0.1),
                                                                                     pytest.approx(0.2)]}
    assert view.classes == [str(d) for d in range(10)]
    assert torch.equal(view.probe(), _probe())
    for step, state in zip(view.steps, states):
        read = view.state_dict(step)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)
    loaded = view.load(5, "cpu")
    net = _net(1).eval()
    x = _probe()
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net(x))
    assert loaded.class_names == tuple(str(d) for d in range(10)) and loaded.spec.input_text == "1x28x28"
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    assert [s["file"] for s in manifest["snapshots"]] == [f"snapshots/step-{s:08d}.safetensors" for s in (0, 5, 10)]


def test_a_snapshot_leaves_the_training_model_as_it_was(tmp_path):
    net = _net().train()
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    Run(tmp_path / "r", MODEL, **GRAY).snapshot(net, step=0)
    assert net.training and all(torch.equal(p.grad, torch.ones_like(p)) for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not net._forward_hooks and not net._forward_pre_hooks


def test_reopening_a_run_appends_and_refuses_what_does_not_fit(tmp_path):
    _record(tmp_path / "r", steps=(0, 1))
    run = Run(tmp_path / "r", MODEL, **GRAY, classes=[str(d) for d in range(10)])
    run.snapshot(_net(), step=2)
    assert open_run(tmp_path / "r").steps == [0, 1, 2]
    with pytest.raises(RunError, match="not after the last snapshot's step 2"):
        run.snapshot(_net(), step=2)
    with pytest.raises(RunError, match="scalar loss is a number"):
        run.snapshot(_net(), step=3, loss="low")
    with pytest.raises(RunError, match="a run of another network"):
        Run(tmp_path / "r", MODEL, input="1x32x32", mean=[0.5], std=[0.5])
    wider = torch.nn.Conv2d(1, 4, 5)
    with pytest.raises(RunError, match="conv1.weight of shape"):
        run.snapshot({**_net().state_dict(), "conv1.weight": wider.weight.detach()}, step=9)
    with pytest.raises(RunError, match="probe is a batch"):
        Run(tmp_path / "p", MODEL, **GRAY, probe=torch.zeros(2, 3, 28, 28))
    with pytest.raises(RunError, match="one value per input channel"):
        Run(tmp_path / "p", MODEL, input="1x28x28", mean=[0.5, 0.5, 0.5], std=[0.5])


def test_the_network_is_named_by_its_own_class_when_not_given(tmp_path):
    run = Run(tmp_path / "r", **GRAY)
    run.snapshot(_net(), step=0)
    view = open_run(tmp_path / "r")
    assert view.description["model"] == f"{NETS_FILE.resolve()}:GrayNet"
    assert view.load(0, "cpu").spec.input_size == 28


def test_damaged_runs_are_read_up_to_what_is_whole_with_one_line_each(tmp_path):
    _record(tmp_path / "r", steps=(0, 1, 2, 3))
    folder = tmp_path / "r" / "snapshots"
    (folder / "step-00000001.safetensors").unlink()  # deleted
    other = {k: v for k, v in _net().state_dict().items()}
    other["fc.weight"] = torch.zeros(10, 7)
    save_file(other, str(folder / "step-00000002.safetensors"))  # shapes that do not match the manifest
    (folder / "step-00000003.safetensors").write_bytes(b"\x00" * 10)  # the last one, half-written
    view = open_run(tmp_path / "r")
    assert view.steps == [0]
    assert len(view.problems) == 2
    assert "step 1" in view.problems[0] and "deleted" in view.problems[0]
    assert "step 2" in view.problems[1] and "fc.weight of shape (10, 7)" in view.problems[1]
    assert all("\n" not in p for p in view.problems)
    with pytest.raises(RunError, match="no snapshot at step 1"):
        view.load(1)


def test_a_folder_that_is_not_a_run_says_so_in_one_line(tmp_path):
    with pytest.raises(RunError, match="no run folder"):
        open_run(tmp_path / "missing")
    with pytest.raises(RunError, match="not a deepvis run"):
        open_run(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="cannot be read"):
        open_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(RunError, match="not a deepvis run manifest"):
        open_run(tmp_path)


def test_adopting_a_folder_of_checkpoints_named_by_step(tmp_path):
    assert [step_of(n) for n in ("epoch_3.pt", "ckpt-000120.safetensors", "final.pt")] == [3, 120, None]
    for step in (1, 3):
        torch.save(_net(step).state_dict(), tmp_path / f"epoch_{step}.pt")
    save_file(_net(2).state_dict(), str(tmp_path / "epoch_2.safetensors"))
    view = Run.adopt(tmp_path, MODEL, **GRAY)
    assert view.steps == [1, 2, 3] and view.problems == ()
    assert torch.equal(view.state_dict(2)["conv1.weight"], _net(2).state_dict()["conv1.weight"])
    torch.save(_net(4).state_dict(), tmp_path / "epoch_4.pt")
    (tmp_path / "epoch_5.pt").write_bytes(b"PK\x03\x04 being written")
    assert open_run(tmp_path).steps == [1, 2, 3, 4]  # a new file appears; a half-written last one does not
    with pytest.raises(RunError, match="adopted folder"):
        Run(tmp_path, MODEL, **GRAY).snapshot(_net(), step=9)
    with pytest.raises(RunError, match="holds no state dicts named by step"):
        Run.adopt(_empty(tmp_path), MODEL, **GRAY)


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_run_is_public():
    assert deepvis.Run is Run and deepvis.open_run is open_run


def test_the_lightning_callbacks_work_takes_a_snapshot_every_n_epochs_with_the_trainers_metrics(tmp_path):
    from types import SimpleNamespace

    from deepvis.lightning import snapshot_epoch

    run = Run(tmp_path / "r", MODEL, **GRAY)
    holder = SimpleNamespace(net=_net())
    taken = []
    for epoch in range(4):
        trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch, global_step=10 * (epoch + 1),
                                  callback_metrics={"train_loss": torch.tensor(1.0 / (epoch + 1)), "hist": torch.ones(3)})
        taken.append(snapshot_epoch(run, trainer, holder, every=2, module=lambda m: m.net))
    assert taken == [False, True, False, True]
    view = open_run(tmp_path / "r")
    assert view.steps == [20, 40] and view.scalars() == {"train_loss": [0.5, 0.25]}
    sanity = SimpleNamespace(sanity_checking=True, current_epoch=5, global_step=0, callback_metrics={})
    assert not snapshot_epoch(run, sanity, holder, module=lambda m: m.net)


def test_a_network_with_tied_weights_is_snapshotted(tmp_path):
    from deepvis.user_code import import_file

    path = tmp_path / "tied.py"
    path.write_text("import torch\nfrom torch import nn\n\nclass Tied(nn.Module):\n    def __init__(self):\n"
                    "        super().__init__()\n        self.a = nn.Conv2d(1, 2, 3)\n        self.b = self.a\n\n"
                    "    def forward(self, x):\n        return self.b(self.a(x)[:, :1])\n")
    net = import_file(path).Tied()
    run = Run(tmp_path / "r", f"{path}:Tied", **GRAY)
    run.snapshot(net, step=0)
    read = open_run(tmp_path / "r").state_dict(0)
    assert torch.equal(read["a.weight"], net.a.weight) and torch.equal(read["b.weight"], net.a.weight)


def test_a_run_being_written_is_never_read_in_a_partial_state(tmp_path):
    import threading

    run = Run(tmp_path / "r", MODEL, **GRAY)
    run.snapshot(_net(), step=0)
    done = threading.Event()

    def write() -> None:
        for step in range(1, 40):
            run.snapshot(_net(step % 3), step=step, loss=float(step))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = 0
    while not done.is_set() or seen < 40:
        view = open_run(tmp_path / "r")
        assert view.problems == () and view.steps == list(range(len(view.steps)))
        assert view.scalars().get("loss", [None])[1:] == [float(s) for s in view.steps[1:]]
        last = view.state_dict(view.steps[-1])  # the newest snapshot listed is whole
        assert last["conv1.weight"].shape == (8, 1, 5, 5)
        seen = len(view.steps)
    writer.join()
