RUN echo hi
FROM base
