# Data science: pandas, numpy, matplotlib, seaborn, scipy, statsmodels from Debian.
FROM base
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3-pandas python3-numpy python3-matplotlib python3-seaborn python3-scipy python3-statsmodels \
 && rm -rf /var/lib/apt/lists/*
# A non-interactive matplotlib backend: sandboxes have no display.
ENV MPLBACKEND=Agg
USER user
WORKDIR /home/user
