FROM base
HEALTHCHECK CMD curl localhost
