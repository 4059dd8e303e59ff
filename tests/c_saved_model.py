"""Loads and runs a SavedModel through TensorFlow's C API, as TensorFlow Serving does.

TF Serving loads a model with the C++ `tensorflow::LoadSavedModel` (tag "serve") and runs a
SignatureDef by the tensor names it lists. The TF wheel's `libtensorflow_cc.so.2` exports
the same loader to C as `TF_LoadSessionFromSavedModel`, and `TF_SessionRun` runs tensors by
name; this module reaches both through ctypes, with no TensorFlow Python API involved in
loading or running. (No TF Serving binary can be installed on the CI machine.)

Usage:
  model = CSavedModel("/path/to/export/7")
  model.signatures["encode"]  # {"inputs": {key: TensorInfo}, "outputs": {...}}
  outputs = model.run("encode", {"images": np.zeros([2, 64, 64, 3], np.float32)})
"""

import ctypes
import dataclasses
import os

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

_TF_DIR = os.path.dirname(os.path.abspath(__import__("tensorflow").__file__))
_FRAMEWORK = ctypes.CDLL(os.path.join(_TF_DIR, "libtensorflow_framework.so.2"),
                         mode=ctypes.RTLD_GLOBAL)
_CC = ctypes.CDLL(os.path.join(_TF_DIR, "libtensorflow_cc.so.2"), mode=ctypes.RTLD_GLOBAL)

# TF_DataType values of the C API (tensorflow/c/tf_datatype.h).
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}
_TF_STRING = 7
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


class _Buffer(ctypes.Structure):
  _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_size_t),
              ("data_deallocator", ctypes.c_void_p)]


class _Output(ctypes.Structure):
  _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _fn(lib, name, restype, *argtypes):
  function = getattr(lib, name)
  function.restype = restype
  function.argtypes = list(argtypes)
  return function


_p = ctypes.c_void_p
_NewStatus = _fn(_CC, "TF_NewStatus", _p)
_DeleteStatus = _fn(_CC, "TF_DeleteStatus", None, _p)
_GetCode = _fn(_CC, "TF_GetCode", ctypes.c_int, _p)
_Message = _fn(_CC, "TF_Message", ctypes.c_char_p, _p)
_NewGraph = _fn(_CC, "TF_NewGraph", _p)
_DeleteGraph = _fn(_CC, "TF_DeleteGraph", None, _p)
_NewSessionOptions = _fn(_CC, "TF_NewSessionOptions", _p)
_DeleteSessionOptions = _fn(_CC, "TF_DeleteSessionOptions", None, _p)
_NewBuffer = _fn(_CC, "TF_NewBuffer", ctypes.POINTER(_Buffer))
_DeleteBuffer = _fn(_CC, "TF_DeleteBuffer", None, ctypes.POINTER(_Buffer))
_Load = _fn(_CC, "TF_LoadSessionFromSavedModel", _p, _p, _p, ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, _p, ctypes.POINTER(_Buffer), _p)
_CloseSession = _fn(_CC, "TF_CloseSession", None, _p, _p)
_DeleteSession = _fn(_CC, "TF_DeleteSession", None, _p, _p)
_OperationByName = _fn(_CC, "TF_GraphOperationByName", _p, _p, ctypes.c_char_p)
_SessionRun = _fn(_CC, "TF_SessionRun", None, _p, _p, ctypes.POINTER(_Output),
                  ctypes.POINTER(_p), ctypes.c_int, ctypes.POINTER(_Output),
                  ctypes.POINTER(_p), ctypes.c_int, _p, ctypes.c_int, _p, _p)
_AllocateTensor = _fn(_FRAMEWORK, "TF_AllocateTensor", _p, ctypes.c_int,
                      ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_size_t)
_DeleteTensor = _fn(_FRAMEWORK, "TF_DeleteTensor", None, _p)
_TensorData = _fn(_FRAMEWORK, "TF_TensorData", _p, _p)
_TensorType = _fn(_FRAMEWORK, "TF_TensorType", ctypes.c_int, _p)
_NumDims = _fn(_FRAMEWORK, "TF_NumDims", ctypes.c_int, _p)
_Dim = _fn(_FRAMEWORK, "TF_Dim", ctypes.c_int64, _p, ctypes.c_int)
_TensorByteSize = _fn(_FRAMEWORK, "TF_TensorByteSize", ctypes.c_size_t, _p)
_StringData = _fn(_CC, "TF_StringGetDataPointer", _p, _p)
_StringSize = _fn(_CC, "TF_StringGetSize", ctypes.c_size_t, _p)
_TSTRING_BYTES = 24  # sizeof(TF_TString)


class CApiError(RuntimeError):
  """A non-OK TF_Status; the message is TensorFlow's."""


class _Status:

  def __enter__(self):
    self.handle = _NewStatus()
    return self.handle

  def __exit__(self, *exc):
    try:
      if exc[0] is None and _GetCode(self.handle) != 0:
        raise CApiError(_Message(self.handle).decode())
    finally:
      _DeleteStatus(self.handle)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  name: str  # "op:index"
  dtype: int  # TF_DataType
  shape: tuple  # -1 for unknown dimensions


def _tensor_infos(proto_map):
  return {key: TensorInfo(info.name, info.dtype,
                          tuple(d.size for d in info.tensor_shape.dim))
          for key, info in proto_map.items()}


def _to_tensor(array):
  array = np.ascontiguousarray(array)
  if array.dtype not in _CODES:
    raise TypeError(f"unsupported dtype {array.dtype}")
  dims = (ctypes.c_int64 * array.ndim)(*array.shape)
  tensor = _AllocateTensor(_CODES[array.dtype], dims, array.ndim, array.nbytes)
  ctypes.memmove(_TensorData(tensor), array.ctypes.data, array.nbytes)
  return tensor


def _from_tensor(tensor):
  shape = tuple(_Dim(tensor, i) for i in range(_NumDims(tensor)))
  dtype = _TensorType(tensor)
  data = _TensorData(tensor)
  if dtype == _TF_STRING:
    count = int(np.prod(shape, dtype=np.int64))
    values = [ctypes.string_at(_StringData(data + i * _TSTRING_BYTES),
                               _StringSize(data + i * _TSTRING_BYTES)) for i in range(count)]
    return np.array(values, dtype=object).reshape(shape)
  buffer = ctypes.string_at(data, _TensorByteSize(tensor))
  return np.frombuffer(buffer, dtype=_DTYPES[dtype]).reshape(shape).copy()


def _output(graph, tensor_name):
  op_name, index = tensor_name.rsplit(":", 1)
  op = _OperationByName(graph, op_name.encode())
  if not op:
    raise CApiError(f"no operation {op_name!r} in the loaded graph")
  return _Output(op, int(index))


class CSavedModel:
  """A SavedModel loaded with TF_LoadSessionFromSavedModel (tag "serve")."""

  def __init__(self, export_dir, tags=("serve",)):
    self.graph = _NewGraph()
    options = _NewSessionOptions()
    meta_graph = _NewBuffer()
    tag_array = (ctypes.c_char_p * len(tags))(*[t.encode() for t in tags])
    try:
      with _Status() as status:
        self.session = _Load(options, None, export_dir.encode(), tag_array, len(tags),
                             self.graph, meta_graph, status)
      proto = meta_graph_pb2.MetaGraphDef.FromString(
          ctypes.string_at(meta_graph.contents.data, meta_graph.contents.length))
    finally:
      _DeleteBuffer(meta_graph)
      _DeleteSessionOptions(options)
    self.signatures = {
        name: {"inputs": _tensor_infos(sig.inputs), "outputs": _tensor_infos(sig.outputs),
               "method_name": sig.method_name}
        for name, sig in proto.signature_def.items() if name != "__saved_model_init_op"}

  def run(self, signature, feeds):
    """Runs `signature` on {input key: array}; returns {output key: array}."""
    spec = self.signatures[signature]
    if set(feeds) != set(spec["inputs"]):
      raise KeyError(f"{signature} takes inputs {sorted(spec['inputs'])}; "
                     f"received {sorted(feeds)}")
    in_keys, out_keys = sorted(feeds), sorted(spec["outputs"])
    inputs = (_Output * len(in_keys))(
        *[_output(self.graph, spec["inputs"][k].name) for k in in_keys])
    values = (_p * len(in_keys))(*[_to_tensor(feeds[k]) for k in in_keys])
    outputs = (_Output * len(out_keys))(
        *[_output(self.graph, spec["outputs"][k].name) for k in out_keys])
    results = (_p * len(out_keys))()
    try:
      with _Status() as status:
        _SessionRun(self.session, None, inputs, values, len(in_keys), outputs, results,
                    len(out_keys), None, 0, None, status)
      return {k: _from_tensor(results[i]) for i, k in enumerate(out_keys)}
    finally:
      for tensor in list(values) + [r for r in results if r]:
        _DeleteTensor(tensor)

  def close(self):
    if self.session:
      with _Status() as status:
        _CloseSession(self.session, status)
      with _Status() as status:
        _DeleteSession(self.session, status)
      self.session = None
      _DeleteGraph(self.graph)
