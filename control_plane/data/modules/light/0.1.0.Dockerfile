# A small worker entry point: prints who and where it runs.
RUN set -e; \
    printf '#!/bin/sh\necho "factory worker $FACTORY_MANIFEST_ID on $(uname -m)"\n' \
      > /opt/factory/bin/worker; \
    chmod 0755 /opt/factory/bin/worker; \
    printf 'FACTORY_LIGHT_VERSION=0.1.0\n' >> /etc/factory-release
