FROM base
COPY ../secret /tmp/
