"""kubeadm's external etcd (ClusterConfiguration etcd.external): what it validates, checks
before init and a control-plane join, and leaves out.

- Validation (cmd/kubeadm/app/apis/kubeadm/validation/validation.go, ValidateEtcd): local and
  external are mutually exclusive; certFile and keyFile both or neither; certFile/keyFile
  require caFile; with any of the three every endpoint must be https (ValidateURLs: "the URL
  must be using the HTTPS scheme", and a URL without a scheme is refused); each file path
  absolute (ValidateAbsolutePath: "path is not absolute").
- Preflight (cmd/kubeadm/app/preflight/checks.go, RunInitNodeChecks): FileExistingCheck with
  the label ExternalEtcdClientCertificates for each of caFile, certFile and keyFile that is set
  ("%s doesn't exist"); on a control-plane join only when the certificates are not downloaded
  (`!(isSecondaryControlPlane && downloadCerts)`), since upload-certs carries them
  (cmd/kubeadm/app/phases/copycerts/copycerts.go, certsToTransfer: externalEtcdCA/Cert/Key). The
  local-etcd checks (Port-2379, Port-2380, DirAvailable--var-lib-etcd) are not made.
- Without local etcd, kubeadm makes no etcd certificates (cmd/kubeadm/app/phases/certs/
  certlist.go, GetCertsWithoutEtcd) and writes no etcd.yaml, and a joining control plane adds
  no etcd member.
"""

import os

FILE_KEYS = ("caFile", "certFile", "keyFile")


def external(cluster: dict):
    """The etcd.external section of a ClusterConfiguration, or None."""
    return (cluster.get("etcd") or {}).get("external") or None


def etcd_errors(cluster: dict) -> list:
    """ValidateEtcd's field errors for a ClusterConfiguration (kubeadm's wording)."""
    etcd = cluster.get("etcd") or {}
    if etcd.get("local") is not None and etcd.get("external") is not None:
        return ['etcd: Invalid value: "": .Etcd.Local and .Etcd.External are mutually '
                "exclusive"]
    ext = etcd.get("external")
    if ext is None:
        return []
    errors = []
    ca, cert, key = (str(ext.get(k) or "") for k in FILE_KEYS)
    if bool(cert) != bool(key):
        errors.append('etcd.external: Invalid value: "": either both or none of '
                      ".Etcd.External.CertFile and .Etcd.External.KeyFile must be set")
    if cert and key and not ca:
        errors.append('etcd.external: Invalid value: "": setting .Etcd.External.CertFile and '
                      ".Etcd.External.KeyFile requires .Etcd.External.CAFile")
    require_https = bool(ca or cert or key)
    for url in ext.get("endpoints") or []:
        url = str(url)
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if require_https and scheme != "https":
            errors.append('etcd.external.endpoints: Invalid value: "%s": the URL must be using '
                          "the HTTPS scheme" % url)
        if not scheme:
            errors.append('etcd.external.endpoints: Invalid value: "%s": the URL without scheme '
                          "is not allowed" % url)
    for field, value in zip(FILE_KEYS, (ca, cert, key)):
        if value and not os.path.isabs(value):
            errors.append('etcd.external.%s: Invalid value: "%s": path is not absolute'
                          % (field, value))
    return errors


def missing_files(cluster: dict, rooted) -> list:
    """FileExistingCheck ExternalEtcdClientCertificates: (name, message) per absent file
    (`rooted` maps a host path to the test host's)."""
    ext = external(cluster) or {}
    return [("ExternalEtcdClientCertificates", "%s doesn't exist" % ext[k])
            for k in FILE_KEYS if ext.get(k) and not os.path.isfile(rooted(str(ext[k])))]


def transferred(cluster: dict) -> dict:
    """upload-certs' external etcd files: {name in the secret: host path}."""
    ext = external(cluster) or {}
    names = {"caFile": "external-etcd-ca.crt", "certFile": "external-etcd.crt",
             "keyFile": "external-etcd.key"}
    return {names[k]: str(ext[k]) for k in FILE_KEYS if ext.get(k)}
