# The venv of pycri's PyPI dependencies (with the checkout on its sys.path) comes first.
PATH=/opt/pycri/venv/bin:$PATH
export PATH
