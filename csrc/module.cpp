// The Python module solid_ext._C. Importing it loads this shared object, which runs
// the static op registrations of ops.cpp and the kernels. Its functions choose and
// report the CPU kernel variant (cpu/isa.h); solid_ext._cpu_isa wraps them.
#include <Python.h>
#include <c10/util/Exception.h>

#include <string>
#include <vector>

#include "cpu/isa.h"

namespace {

PyObject* raise(const std::exception& e) {
  const auto* ce = dynamic_cast<const c10::Error*>(&e);
  PyErr_SetString(PyExc_ValueError, ce ? ce->what_without_backtrace() : e.what());
  return nullptr;
}

PyObject* str_list(const std::vector<std::string>& v) {
  PyObject* out = PyList_New(static_cast<Py_ssize_t>(v.size()));
  if (!out) return nullptr;
  for (size_t i = 0; i < v.size(); ++i)
    PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), PyUnicode_FromString(v[i].c_str()));
  return out;
}

PyObject* cpu_isa(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(solid_ext::cpu::active_isa().c_str());
  } catch (const std::exception& e) {
    return raise(e);
  }
}

PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (!name) return nullptr;
  try {
    solid_ext::cpu::set_isa(name);
  } catch (const std::exception& e) {
    return raise(e);
  }
  Py_RETURN_NONE;
}

PyObject* cpu_isas_supported(PyObject*, PyObject*) {
  return str_list(solid_ext::cpu::isas_supported());
}

PyObject* cpu_isas_built(PyObject*, PyObject*) { return str_list(solid_ext::cpu::isas_built()); }

PyObject* fma_flops(PyObject*, PyObject* args) {
  const char* isa;
  long long iters, threads;
  if (!PyArg_ParseTuple(args, "sLL", &isa, &iters, &threads)) return nullptr;
  double flops = 0;
  std::string error;
  // No exception may cross the region without the GIL: catch inside it.
  Py_BEGIN_ALLOW_THREADS;
  try {
    flops = solid_ext::cpu::fma_flops(isa, iters, threads);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  Py_END_ALLOW_THREADS;
  if (!error.empty()) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  return PyFloat_FromDouble(flops);
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The CPU kernel variant in use."},
    {"set_cpu_isa", set_cpu_isa, METH_O, "Select the CPU kernel variant ('auto': default)."},
    {"cpu_isas_supported", cpu_isas_supported, METH_NOARGS,
     "Variants built and runnable on this CPU, widest first."},
    {"cpu_isas_built", cpu_isas_built, METH_NOARGS, "Variants compiled into this module."},
    {"fma_flops", fma_flops, METH_VARARGS,
     "fma_flops(isa, iters, threads): float32 FLOPs of the variant's FMA loop."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "solid_ext compiled kernels", -1, methods};
  return PyModule_Create(&module_def);
}
