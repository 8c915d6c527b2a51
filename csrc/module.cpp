// The Python module solid_ext._C. Importing it loads this shared object, which runs
// the static op registrations of ops.cpp and the kernels; the module exposes nothing.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "solid_ext compiled kernels", -1, nullptr};
  return PyModule_Create(&module_def);
}
