"""Throw-away x509 material for TLS migration tests, made with the openssl
command: certificate authorities, and per node a credentials directory laid
out as the hvops.kvm.kvm_node role lays it out (ca-cert.pem, the node's
certificate and key as server-* and client-*; keys the QEMU user's, 0600;
the directory root:QEMU group, 0750)."""
import grp
import os
import pwd
import shutil
import subprocess

from tests.harness.system import QEMU_USER, reachable_dir, require_binary

CURVE = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']


def _openssl(args, cwd):
    subprocess.run([require_binary('openssl')] + args, cwd=cwd, check=True, capture_output=True)


class Pki:
    """Authorities and node credentials under one directory the QEMU user can reach."""

    def __init__(self):
        self.base = reachable_dir('hk-tls-')

    def authority(self, name):
        """(cert, key) of a new CA called name."""
        directory = os.path.join(self.base, 'ca-' + name)
        os.mkdir(directory, 0o700)
        _openssl(['req', '-x509'] + CURVE + ['-keyout', 'ca.key', '-out', 'ca.pem', '-days', '30',
                                             '-subj', '/CN=%s' % name,
                                             '-addext', 'basicConstraints=critical,CA:TRUE',
                                             '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], directory)
        return os.path.join(directory, 'ca.pem'), os.path.join(directory, 'ca.key')

    def node(self, ca, name, address='127.0.0.1'):
        """The credentials directory of node name (CN=name), signed by ca."""
        ca_cert, ca_key = ca
        directory = os.path.join(self.base, 'node-%s-%s' % (name, os.path.basename(os.path.dirname(ca_cert))))
        os.mkdir(directory, 0o700)
        with open(os.path.join(directory, 'ext.cnf'), 'w') as handle:
            handle.write('basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n'
                         'extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s,IP:%s\n' % (name, address))
        _openssl(['req'] + CURVE + ['-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=%s' % name], directory)
        _openssl(['x509', '-req', '-in', 'node.csr', '-CA', ca_cert, '-CAkey', ca_key, '-CAcreateserial',
                  '-out', 'node.pem', '-days', '30', '-extfile', 'ext.cnf'], directory)
        user = pwd.getpwnam(QEMU_USER)
        shutil.copyfile(ca_cert, os.path.join(directory, 'ca-cert.pem'))
        for role in ('server', 'client'):
            shutil.copyfile(os.path.join(directory, 'node.pem'), os.path.join(directory, '%s-cert.pem' % role))
            key = os.path.join(directory, '%s-key.pem' % role)
            shutil.copyfile(os.path.join(directory, 'node.key'), key)
            os.chown(key, user.pw_uid, user.pw_gid)
            os.chmod(key, 0o600)
        for entry in ('ca-cert.pem', 'server-cert.pem', 'client-cert.pem'):
            os.chmod(os.path.join(directory, entry), 0o644)
        for entry in ('node.key', 'node.csr', 'ext.cnf'):
            os.unlink(os.path.join(directory, entry))
        os.chown(directory, 0, grp.getgrnam(QEMU_USER).gr_gid)
        os.chmod(directory, 0o750)
        return directory

    def destroy(self):
        shutil.rmtree(self.base, ignore_errors=True)
