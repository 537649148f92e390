"""ptrain summary (models/summary.py): the layer table's counts add up to the model's, FLOPs
agree with the hand formula, and the train start line carries them."""

import json

import torch
from torch import nn

from pytorch_cli.models import summary, zoo


def test_a_convs_flops_are_the_hand_formula():
    # out 8 x 8 x 8 values, each 3 x 3 x 3 multiply-adds: 2 FLOPs each
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    assert summary.flops_per_image(conv, (3, 10, 10)) == 2 * (8 * 8 * 8 * 27 + 512 * 4)


def test_the_table_adds_up_to_the_models_parameters_and_outputs():
    for name, image in (("lenet", (1, 28, 28)), ("resnet18", (3, 32, 32))):
        model = zoo.build(name, image[0], 10, image[1:])
        s = summary.summarize(model, image, batch_size=16)
        assert sum(layer.params for layer in s.layers) == s.params == \
            sum(p.numel() for p in model.parameters())
        assert s.trainable == s.params and s.layers[-1].shape == (10,)
        # (resnet18's ReLUs are in place, its maxpool an Identity at 32x32: their outputs are
        # their inputs, no memory of their own; every other layer runs once)
        outputs = sum(torch.Size(layer.shape).numel() for layer in s.layers
                      if layer.shape and layer.kind not in ("ReLU", "Identity"))
        assert s.activation_bytes == 16 * 4 * outputs
    assert model.training  # the probe leaves the mode as it was


class _TwiceReLU(nn.Module):
    """One ReLU module called twice, as in torchvision's BasicBlock."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.fc = nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Linear(4 * 6 * 6, 2)
        self.same, self.drop = nn.ReLU(inplace=True), nn.Dropout(0.5)

    def forward(self, x):
        x = self.same(self.relu(self.relu(self.conv(x)) * 2))  # (in place: its input's memory)
        return self.fc(self.drop(x).flatten(1))


def test_a_layer_called_twice_holds_both_outputs():
    # a hostile trial: torchvision's resnet18 was counted 15,360 floats an image short, the
    # second call of each block's ReLU
    s = summary.summarize(_TwiceReLU(), (1, 8, 8), batch_size=3)
    # conv 4x6x6, relu twice, the dropout (new memory in training), fc 2: 4-byte floats, x 3
    assert s.activation_bytes == 3 * 4 * (4 * 144 + 2)
    assert [layer.shape for layer in s.layers] == [(4, 6, 6)] * 2 + [(2,)] + [(4, 6, 6)] * 2


def test_summary_of_a_run_and_of_a_config_and_the_start_lines_flops(ptrain, tmp_path):
    r = ptrain("train", "--dataset", "fake", "--epochs", "1", "--max-steps", "2",
               "--run-dir", "run")
    assert r.code == 0 and "(21,840 parameters, 961 kFLOPs per image) on fake" in r.out
    table = ptrain("summary", "run")
    assert table.code == 0 and "\n  conv2       Conv2d     20x8x8         5,020      5,020\n" in \
        table.out and "forward: 961 kFLOPs per image" in table.out
    frozen = ptrain("summary", "--model", "resnet18", "--dataset", "cifar10", "--json")
    frozen_cfg = tmp_path / "f.toml"
    frozen_cfg.write_text('model = "resnet18"\ndataset = "cifar10"\nfreeze = "backbone"\n')
    head = ptrain("summary", "--config", str(frozen_cfg), "--json").json()
    whole = json.loads(frozen.out)
    assert whole["params"] == head["params"] and head["trainable"] == 512 * 10 + 10
    flag = ptrain("summary", "--model", "resnet18", "--dataset", "cifar10", "--freeze",
                  "backbone", "--json").json()
    assert flag["trainable"] == head["trainable"]  # as the config's freeze
    assert ptrain("summary", "run", "--model", "cifar-net").code == 2  # not the run's model
    assert ptrain("summary", "run", "--freeze", "backbone").code == 2  # a run says its own
    import torch

    from pytorch_cli.commands import saved
    torch.save(saved.load_model(tmp_path / "run").model.state_dict(), tmp_path / "bare.pt")
    bare = ptrain("summary", "bare.pt", "--model", "lenet", "--dataset", "fake", "--json")
    assert bare.code == 0 and bare.json()["params"] == 21_840, bare.err
    assert ptrain("train", "--dataset", "fake", "--model", "fast-cnn", "--freeze", "backbone",
                  "--max-steps", "1", "--epochs", "1", "--run-dir", "frozen", "--quiet").code == 0
    assert ptrain("summary", "frozen", "--json").json()["trainable"] == 128 * 10 + 10
