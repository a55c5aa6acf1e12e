# A vendor agent that is only shipped for x86_64: its launcher refuses any other machine.
RUN set -e; \
    mkdir -p /opt/legacy; \
    printf 'x86_64\n' > /opt/legacy/SUPPORTED_MACHINES; \
    printf '#!/bin/sh\nm=$(uname -m)\nif ! grep -qx "$m" /opt/legacy/SUPPORTED_MACHINES; then\n  echo "legacy agent: unsupported machine $m (supported: $(cat /opt/legacy/SUPPORTED_MACHINES))" >&2\n  exit 78\nfi\necho "legacy agent ready on $m"\n' \
      > /opt/factory/bin/legacy-agent; \
    chmod 0755 /opt/factory/bin/legacy-agent; \
    printf 'FACTORY_LEGACY_VERSION=0.1.0\n' >> /etc/factory-release
