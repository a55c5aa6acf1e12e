# The layout every Factory service shares, and a release file the smoke test reads.
RUN set -e; \
    mkdir -p /opt/factory/bin /var/lib/factory; \
    chown 10001:10001 /var/lib/factory; \
    printf 'FACTORY_CORE_VERSION=0.1.0\n' > /etc/factory-release
ENV PATH=/opt/factory/bin:/bin:/sbin:/usr/bin:/usr/sbin
