FROM base
RUN <<EOF
echo hi
EOF
