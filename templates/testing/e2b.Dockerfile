# Testing: pytest, coverage and hypothesis from Debian.
FROM base
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3-pytest python3-coverage python3-hypothesis \
 && rm -rf /var/lib/apt/lists/*
USER user
WORKDIR /home/user
