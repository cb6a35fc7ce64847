FROM e2bdev/code-interpreter
RUN pip install --no-cache-dir tabulate
