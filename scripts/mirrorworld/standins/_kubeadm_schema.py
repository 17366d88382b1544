"""Field lists of the kinds kubeadm reads, for strict decoding at every depth.

kubeadm 1.23 decodes its config with the strict serializer and, on an unknown or duplicate
field, prints a warning and carries on (cmd/kubeadm/app/util/config/strict/strict.go,
VerifyUnmarshalStrict); later versions refuse. The stand-in refuses, so that no config the
installer renders ever carries a field kubeadm would drop. Field names follow the json tags of:

- cmd/kubeadm/app/apis/kubeadm/v1beta3/types.go (InitConfiguration, ClusterConfiguration,
  JoinConfiguration and their nested structs), cmd/kubeadm/app/apis/bootstraptoken/v1/types.go
  (BootstrapToken), k8s.io/api/core/v1 Taint;
- staging/src/k8s.io/kubelet/config/v1beta1/types.go (KubeletConfiguration) and
  staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go (KubeProxyConfiguration) of 1.23: their
  top-level fields only (nested component-config structs are not checked).

v1beta4 (kubeadm 1.31+, kubernetes/kubernetes#125029; cmd/kubeadm/app/apis/kubeadm/v1beta4/
types.go and the v1beta4 page of the kubeadm config reference) differs where the installer's
configs reach: every `extraArgs` and `nodeRegistration.kubeletExtraArgs` is a list of
{name, value} (Arg), not a map; JoinConfiguration's `discovery.timeout` and ClusterConfiguration's
`apiServer.timeoutForControlPlane` are gone, replaced by a `timeouts` struct on InitConfiguration
and JoinConfiguration; `dryRun`, `extraEnvs`, `imagePullSerial`, `encryptionAlgorithm`, the
certificate validity periods, `dns.disabled` and `proxy.disabled` are new. A map where v1beta4 has
a list (and the reverse) is an error, as the strict decoder's type mismatch is.

A schema is a dict field -> sub-schema; ANY is a scalar or a free-form value, MAP a map with
free keys (extraArgs, featureGates), [schema] a list of that schema.
"""

ANY = None
MAP = "map"

APIENDPOINT = {"advertiseAddress": ANY, "bindPort": ANY}
TAINT = {"key": ANY, "value": ANY, "effect": ANY, "timeAdded": ANY}
NODE_REGISTRATION = {"name": ANY, "criSocket": ANY, "taints": [TAINT], "kubeletExtraArgs": MAP,
                     "ignorePreflightErrors": ANY, "imagePullPolicy": ANY}
BOOTSTRAP_TOKEN = {"token": ANY, "description": ANY, "ttl": ANY, "expires": ANY, "usages": ANY,
                   "groups": ANY}
PATCHES = {"directory": ANY}
HOSTPATH_MOUNT = {"name": ANY, "hostPath": ANY, "mountPath": ANY, "readOnly": ANY,
                  "pathType": ANY}
COMPONENT = {"extraArgs": MAP, "extraVolumes": [HOSTPATH_MOUNT]}
IMAGE_META = {"imageRepository": ANY, "imageTag": ANY}
LOCAL_ETCD = dict(IMAGE_META, dataDir=ANY, extraArgs=MAP, serverCertSANs=ANY, peerCertSANs=ANY)
EXTERNAL_ETCD = {"endpoints": ANY, "caFile": ANY, "certFile": ANY, "keyFile": ANY}
TYPE_META = {"apiVersion": ANY, "kind": ANY}

KINDS = {
    "InitConfiguration": dict(TYPE_META, bootstrapTokens=[BOOTSTRAP_TOKEN],
                              nodeRegistration=NODE_REGISTRATION, localAPIEndpoint=APIENDPOINT,
                              certificateKey=ANY, skipPhases=ANY, patches=PATCHES),
    "ClusterConfiguration": dict(
        TYPE_META, etcd={"local": LOCAL_ETCD, "external": EXTERNAL_ETCD},
        networking={"serviceSubnet": ANY, "podSubnet": ANY, "dnsDomain": ANY},
        kubernetesVersion=ANY, controlPlaneEndpoint=ANY,
        apiServer=dict(COMPONENT, certSANs=ANY, timeoutForControlPlane=ANY),
        controllerManager=COMPONENT, scheduler=COMPONENT, dns=IMAGE_META, certificatesDir=ANY,
        imageRepository=ANY, featureGates=MAP, clusterName=ANY),
    "JoinConfiguration": dict(
        TYPE_META, nodeRegistration=NODE_REGISTRATION, caCertPath=ANY,
        discovery={"bootstrapToken": {"token": ANY, "apiServerEndpoint": ANY,
                                      "caCertHashes": ANY, "unsafeSkipCAVerification": ANY},
                   "file": {"kubeConfigPath": ANY}, "tlsBootstrapToken": ANY, "timeout": ANY},
        controlPlane={"localAPIEndpoint": APIENDPOINT, "certificateKey": ANY},
        skipPhases=ANY, patches=PATCHES),
    "KubeletConfiguration": dict(TYPE_META, **{name: ANY for name in """
        enableServer staticPodPath syncFrequency fileCheckFrequency httpCheckFrequency
        staticPodURL staticPodURLHeader address port readOnlyPort tlsCertFile tlsPrivateKeyFile
        tlsCipherSuites tlsMinVersion rotateCertificates serverTLSBootstrap authentication
        authorization registryPullQPS registryBurst eventRecordQPS eventBurst
        enableDebuggingHandlers enableContentionProfiling healthzPort healthzBindAddress
        oomScoreAdj clusterDomain clusterDNS streamingConnectionIdleTimeout
        nodeStatusUpdateFrequency nodeStatusReportFrequency nodeLeaseDurationSeconds
        imageMinimumGCAge imageGCHighThresholdPercent imageGCLowThresholdPercent
        volumeStatsAggPeriod kubeletCgroups systemCgroups cgroupRoot cgroupsPerQOS cgroupDriver
        cpuManagerPolicy cpuManagerPolicyOptions cpuManagerReconcilePeriod memoryManagerPolicy
        topologyManagerPolicy topologyManagerScope qosReserved runtimeRequestTimeout
        hairpinMode maxPods podCIDR podPidsLimit resolvConf runOnce cpuCFSQuota
        cpuCFSQuotaPeriod nodeStatusMaxImages maxOpenFiles contentType kubeAPIQPS kubeAPIBurst
        serializeImagePulls evictionHard evictionSoft evictionSoftGracePeriod
        evictionPressureTransitionPeriod evictionMaxPodGracePeriod evictionMinimumReclaim
        podsPerCore enableControllerAttachDetach protectKernelDefaults makeIPTablesUtilChains
        iptablesMasqueradeBit iptablesDropBit featureGates failSwapOn memorySwap
        containerLogMaxSize containerLogMaxFiles configMapAndSecretChangeDetectionStrategy
        systemReserved kubeReserved reservedSystemCPUs showHiddenMetricsForVersion
        systemReservedCgroup kubeReservedCgroup enforceNodeAllocatable allowedUnsafeSysctls
        volumePluginDir providerID kernelMemcgNotification logging enableSystemLogHandler
        shutdownGracePeriod shutdownGracePeriodCriticalPods shutdownGracePeriodByPodPriority
        reservedMemory enableProfilingHandler enableDebugFlagsHandler seccompDefault
        memoryThrottlingFactor registerWithTaints registerNode""".split()}),
    "KubeProxyConfiguration": dict(TYPE_META, **{name: ANY for name in """
        featureGates bindAddress healthzBindAddress metricsBindAddress bindAddressHardFail
        enableProfiling clusterCIDR hostnameOverride clientConnection iptables ipvs oomScoreAdj
        mode portRange udpIdleTimeout conntrack configSyncPeriod nodePortAddresses winkernel
        showHiddenMetricsForVersion detectLocalMode""".split()}),
}


ARG = {"name": ANY, "value": ANY}
ENV = {"name": ANY, "value": ANY, "valueFrom": ANY}
TIMEOUTS = {name: ANY for name in (
    "controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall",
    "etcdAPICall", "tlsBootstrap", "discovery", "upgradeManifests")}
NODE_REGISTRATION_4 = dict(NODE_REGISTRATION, kubeletExtraArgs=[ARG], imagePullSerial=ANY)
COMPONENT_4 = {"extraArgs": [ARG], "extraVolumes": [HOSTPATH_MOUNT], "extraEnvs": [ENV]}
KINDS_V1BETA4 = dict(KINDS)
KINDS_V1BETA4.update({
    "InitConfiguration": dict(KINDS["InitConfiguration"], nodeRegistration=NODE_REGISTRATION_4,
                              dryRun=ANY, timeouts=TIMEOUTS),
    "ClusterConfiguration": dict(
        KINDS["ClusterConfiguration"],
        etcd={"local": dict(LOCAL_ETCD, extraArgs=[ARG], extraEnvs=[ENV]),
              "external": EXTERNAL_ETCD},
        apiServer=dict(COMPONENT_4, certSANs=ANY), controllerManager=COMPONENT_4,
        scheduler=COMPONENT_4, dns=dict(IMAGE_META, disabled=ANY), proxy={"disabled": ANY},
        encryptionAlgorithm=ANY, certificateValidityPeriod=ANY,
        caCertificateValidityPeriod=ANY),
    "JoinConfiguration": dict(
        KINDS["JoinConfiguration"], nodeRegistration=NODE_REGISTRATION_4, dryRun=ANY,
        timeouts=TIMEOUTS,
        discovery={"bootstrapToken": KINDS["JoinConfiguration"]["discovery"]["bootstrapToken"],
                   "file": {"kubeConfigPath": ANY}, "tlsBootstrapToken": ANY}),
})


def unknown_fields(kind: str, doc, api: str = "kubeadm.k8s.io/v1beta3") -> list:
    """Dotted paths of every field of `doc` that kind's type in `api` does not have, at any
    depth (a path ending in "(want a list)" or "(want a map)": the wrong shape of value)."""
    kinds = KINDS_V1BETA4 if api.endswith("/v1beta4") else KINDS
    schema = kinds.get(kind)
    return [] if schema is None else _walk(schema, doc, "")


def _walk(schema, value, path: str) -> list:
    if schema is ANY:
        return []
    if schema == MAP:
        return [] if value is None or isinstance(value, dict) else [path + " (want a map)"]
    if isinstance(schema, list) and value is not None and not isinstance(value, list):
        return [path + " (want a list)"]
    if isinstance(schema, list):
        found = []
        for index, item in enumerate(value if isinstance(value, list) else []):
            found += _walk(schema[0], item, "%s[%d]" % (path, index))
        return found
    found = []
    for key, item in (value.items() if isinstance(value, dict) else []):
        where = "%s.%s" % (path, key) if path else str(key)
        if key not in schema:
            found.append(where)
        else:
            found += _walk(schema[key], item, where)
    return found
