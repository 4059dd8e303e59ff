"""mixed_bfloat16: float32 edges, the same training within bfloat16's rounding, float32 exports."""

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import config, export, machine, model as model_lib, training, training_data
from strategies import strategy as _strategy

MODEL = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3)
QUIET = training.LoopOptions(log_every_secs=1e9, summary_every_steps=2, image_every_steps=3)


def _losses(precision, steps=6):
  train_config = config.TrainConfig(num_sprites=2, batch_size=8, train_steps=steps, seed=3,
                                    precision=precision)
  trainer = training.Trainer(MODEL, train_config, _strategy("/cpu:0"))
  iterator = iter(trainer.distribute(training_data.training_dataset(MODEL, train_config)))
  return np.array([float(trainer.train_step(next(iterator))["loss"]) for _ in range(steps)])


def test_both_precisions_train_alike_from_the_same_seed():
  fp32, bf16 = _losses("float32"), _losses("mixed_bfloat16")
  # bfloat16 keeps 8 significant bits (relative rounding 2^-8 = 0.4%) in every activation,
  # but the loss sums about 8,000 nats over 12,288 values and its rounding errors mostly
  # cancel: over six Adam steps from the same weights and batches the two precisions were
  # 0.05% apart. 0.5% allows for other CPUs' kernels and still catches a lost cast.
  np.testing.assert_allclose(bf16, fp32, rtol=0.005)
  assert not np.allclose(bf16, fp32, rtol=1e-6)  # It did compute in bfloat16.
  assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]


def test_mixed_precision_keeps_variables_and_outputs_float32():
  model = model_lib.build_model(MODEL, "mixed_bfloat16")
  assert model.encoder.head.compute_dtype == "bfloat16"
  assert model.decoder.renderer.logits.compute_dtype == "bfloat16"
  assert {v.dtype for v in model.variables} == {"float32"}
  images = tf.random.stateless_uniform([2, 64, 64, 3], seed=[0, 1])
  outputs = model(images, noise=tf.zeros([2, 3, 5]))
  assert {name: value.dtype for name, value in outputs.items()} == {
      name: tf.float32 for name in outputs}


def test_a_bfloat16_run_resumes_in_float32_and_exports_float32_signatures(tmp_path):
  model_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
  settings = dict(num_sprites=2, batch_size=4, seed=5)
  training.train(MODEL, config.TrainConfig(train_steps=2, precision="mixed_bfloat16",
                                           **settings),
                 model_dir, _strategy("/cpu:0"), QUIET, log=lambda _: None)
  # Precision may change on resume: it changes how the model computes, not its variables.
  assert training.train(MODEL, config.TrainConfig(train_steps=3, **settings), model_dir,
                        _strategy("/cpu:0"), QUIET, log=lambda _: None) == 3
  path = export.export(model_dir, export_dir)
  signatures = tf.saved_model.load(path).signatures
  for name in ("encode", "decode", "reconstruct"):
    inputs = signatures[name].structured_input_signature[1]
    outputs = signatures[name].structured_outputs
    assert {spec.dtype for spec in inputs.values()} == {tf.float32}, name
    assert {spec.dtype for spec in outputs.values()} == {tf.float32}, name


@pytest.mark.parametrize("flags, gpus, precision, warning_says", [
    ("avx2 avx512f", [], "mixed_bfloat16", "CPU without bfloat16 units"),
    ("avx2 avx512f avx512_bf16", [], "mixed_bfloat16", None),
    ("avx2 amx_bf16", [], "mixed_bfloat16", None),
    ("avx2", [], "float32", None),
    # On GPUs the CPU's flags do not matter; their compute capability does.
    ("avx2", [(8, 0)], "mixed_bfloat16", None),
    ("avx2", [(9, 0), (8, 6)], "mixed_bfloat16", None),
    ("avx2", [None], "mixed_bfloat16", None),  # TF does not say: no guess.
    ("avx2 avx512_bf16", [(7, 5)], "mixed_bfloat16", "compute capability 7.5,"),
    ("avx2", [(8, 0), (7, 0), (7, 0)], "mixed_bfloat16", "compute capability 7.0,"),
    ("avx2", [(7, 0), (6, 1)], "mixed_bfloat16", "compute capability 6.1, 7.0,"),
    ("avx2", [(7, 5)], "float32", None),
])
def test_bfloat16_without_bf16_units_warns_in_one_line(tmp_path, flags, gpus, precision,
                                                      warning_says):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu {flags}\n")
  warning = machine.bfloat16_warning(precision, gpus, path=str(cpuinfo))
  if warning_says:
    assert len(warning.splitlines()) == 1 and warning_says in warning
    assert "--precision=float32" in warning
  else:
    assert warning is None


def test_gpu_compute_capabilities_read_each_gpus_device_details(monkeypatch):
  gpus = ["gpu0", "gpu1", "gpu2"]
  details = {"gpu0": {"compute_capability": (8, 6), "device_name": "A"},
             "gpu1": {"device_name": "no capability given"},
             "gpu2": {"compute_capability": (7, 0)}}
  monkeypatch.setattr(tf.config, "list_physical_devices",
                      lambda kind=None: gpus if kind == "GPU" else [])
  monkeypatch.setattr(tf.config.experimental, "get_device_details", details.__getitem__)
  capabilities = machine.gpu_compute_capabilities()
  assert capabilities == [(8, 6), None, (7, 0)]  # In TF's order, None where not given.
  warning = machine.bfloat16_warning("mixed_bfloat16", capabilities)
  assert "compute capability 7.0," in warning and "8.6" not in warning


def test_cpu_facts_read_the_flags(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("\nprocessor\t: 0\ncpu family\t: 6\nmodel\t\t: 207\nmodel name\t: Some CPU\n"
                     "flags\t\t: fpu avx2 amx_bf16\n\n"
                     "processor\t: 1\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Other\n"
                     "flags\t\t: fpu avx512f\n")
  facts = machine.cpu_facts(str(cpuinfo))
  # The first CPU's fields, not the second's.
  assert (facts["cpu_model"], facts["cpu_family_model"]) == ("Some CPU", "6/207")
  assert (facts["avx2"], facts["avx512f"], facts["avx512_bf16"], facts["amx_bf16"]) == (
      True, False, False, True)


def test_cpu_facts_without_a_readable_cpuinfo_fall_back(tmp_path):
  facts = machine.cpu_facts(str(tmp_path / "missing"))
  assert facts["cpu_family_model"] == ""
  assert (facts["avx2"], facts["avx512f"], facts["avx512_bf16"], facts["amx_bf16"]) == (
      False, False, False, False)
  assert facts["cpu_model"]  # platform's name for the machine instead.


def test_describe_names_the_cpu_its_number_flags_and_tensorflow():
  facts = {"cpu_model": "Some CPU", "cpu_family_model": "6/207", "logical_cores": 2,
           "avx2": True, "avx512f": False, "avx512_bf16": False, "amx_bf16": True,
           "tensorflow": "2.21.0", "onednn": True, "gpus": []}
  assert machine.describe(facts) == (
      "machine: Some CPU (family/model 6/207), 2 logical cores, flags avx2 amx_bf16; "
      "TF 2.21.0, oneDNN on, GPUs: none")
  facts.update(cpu_family_model="", avx2=False, amx_bf16=False, onednn=False,
               gpus=["A100", "A100"])
  assert machine.describe(facts) == (
      "machine: Some CPU, 2 logical cores, flags none; TF 2.21.0, oneDNN off, GPUs: A100, A100")


def test_an_unknown_precision_is_refused():
  with pytest.raises(config.ConfigError, match=r"--precision must be one of float32, "
                     r"mixed_bfloat16; received 'float16'"):
    config.TrainConfig(precision="float16")
