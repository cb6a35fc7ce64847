python3 -c "import flask, fastapi, uvicorn, requests, bs4; print('web-dev ok')" && node --version && npm --version
