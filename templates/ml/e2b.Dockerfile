# Machine learning: scikit-learn and PyTorch (CPU) from Debian, plus the data-science basics.
FROM base
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3-sklearn python3-torch python3-pandas python3-numpy python3-scipy python3-joblib \
 && rm -rf /var/lib/apt/lists/*
ENV MPLBACKEND=Agg
USER user
WORKDIR /home/user
