python3 -c "import pytest, coverage, hypothesis; print('testing ok')" && python3 -m pytest --version
