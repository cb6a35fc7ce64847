FROM base
ADD https://example.com/x.tgz /tmp/
