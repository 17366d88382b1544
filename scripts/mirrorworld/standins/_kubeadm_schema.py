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


def unknown_fields(kind: str, doc) -> list:
    """Dotted paths of every field of `doc` that kind's type does not have, at any depth."""
    schema = KINDS.get(kind)
    return [] if schema is None else _walk(schema, doc, "")


def _walk(schema, value, path: str) -> list:
    if schema is ANY or schema == MAP:
        return []
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
