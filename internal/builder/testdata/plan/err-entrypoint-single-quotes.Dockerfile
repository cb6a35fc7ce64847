FROM base
ENTRYPOINT ['node', 'server.js']
