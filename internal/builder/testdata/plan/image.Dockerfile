FROM python:3.12-slim
RUN pip install requests
CMD python3 -m http.server
