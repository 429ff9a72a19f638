//! cgroup v2 path -> systemd unit or container id. Pure string work, unit-tested on the
//! layouts of systemd, docker, containerd/Kubernetes, cri-o, podman and LXC.

/// What a cgroup path says about the workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    pub unit: Option<String>,
    pub container_id: Option<String>,
}

/// Scope prefixes container runtimes use for their systemd scopes.
const SCOPE_PREFIXES: [&str; 5] = [
    "docker-",
    "cri-containerd-",
    "crio-",
    "libpod-",
    "containerd-",
];

pub fn identify(path: &str) -> CgroupIdentity {
    let mut id = CgroupIdentity::default();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(container) = container_id(component) {
            id.container_id = Some(container);
            continue;
        }
        if let Some(name) = component.strip_prefix("lxc.payload.") {
            id.container_id = Some(name.to_owned());
            continue;
        }
        let is_unit = std::path::Path::new(component)
            .extension()
            .is_some_and(|e| e == "service" || e == "scope");
        if is_unit {
            // The deepest unit wins: user@1000.service/app.slice/foo.service -> foo.service.
            id.unit = Some(component.to_owned());
        }
    }
    id
}

/// A container id in one path component: `docker-<hex>.scope`, `crio-<hex>.scope`, or a bare
/// 64-hex component (cgroupfs driver: `/docker/<hex>`, `/kubepods/burstable/pod../<hex>`).
fn container_id(component: &str) -> Option<String> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    // conmon is the runtime's monitor process, not the container.
    if stem.starts_with("crio-conmon-") || stem.starts_with("libpod-conmon-") {
        return None;
    }
    let hex = SCOPE_PREFIXES
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .unwrap_or(stem);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c4a8d2e7b9c0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";

    #[test]
    fn systemd_services_and_sessions() {
        assert_eq!(
            identify("/system.slice/nginx.service").unit.as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            identify("/user.slice/user-1000.slice/session-3.scope")
                .unit
                .as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(
            identify("/user.slice/user-1000.slice/user@1000.service/app.slice/synapse.service")
                .unit
                .as_deref(),
            Some("synapse.service")
        );
        assert_eq!(identify("/"), CgroupIdentity::default());
    }

    #[test]
    fn docker_both_drivers() {
        let systemd = identify(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(systemd.container_id.as_deref(), Some(ID));
        assert_eq!(systemd.unit, None);
        let cgroupfs = identify(&format!("/docker/{ID}"));
        assert_eq!(cgroupfs.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn kubernetes_containerd_and_crio() {
        let k8s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(identify(&k8s).container_id.as_deref(), Some(ID));
        let crio = format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope");
        assert_eq!(identify(&crio).container_id.as_deref(), Some(ID));
        let conmon = format!("/machine.slice/crio-conmon-{ID}.scope");
        assert_eq!(identify(&conmon).container_id, None);
    }

    #[test]
    fn podman_and_lxc() {
        let podman = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        assert_eq!(identify(&podman).container_id.as_deref(), Some(ID));
        assert_eq!(
            identify("/lxc.payload.web1/system.slice/nginx.service")
                .container_id
                .as_deref(),
            Some("web1")
        );
    }

    #[test]
    fn short_hex_is_not_a_container() {
        assert_eq!(
            identify("/system.slice/docker-abc.scope").container_id,
            None
        );
    }
}
