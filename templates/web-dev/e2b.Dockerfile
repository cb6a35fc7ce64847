# Web development: Flask, FastAPI, uvicorn, requests, Beautiful Soup, Node.js and npm.
FROM base
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3-flask python3-fastapi python3-uvicorn python3-requests python3-bs4 \
      nodejs npm \
 && rm -rf /var/lib/apt/lists/*
USER user
WORKDIR /home/user
