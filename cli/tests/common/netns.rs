//! [`Lan`]: machines as network namespaces on one switch, for network-fault tests.
//!
//! A hub namespace holds a bridge (the switch); every member namespace is plugged into
//! it with a veth pair and gets `10.231.S.(10+i)/24`, and the test's own (root)
//! namespace is plugged in too as `10.231.S.1`, so the test reaches every member.
//! [`Lan::cut`] takes a member's switch port down — its packets vanish, as with a pulled
//! cable: no reset, no refusal — and [`Lan::restore`] brings it back. Everything is
//! removed on drop. Needs root and `ip` (iproute2).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Machines on one switch (see the module doc).
pub struct Lan {
    id: u32,
    subnet: u8,
    members: Vec<String>,
    created: Vec<String>,
    root_if: Option<String>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lan {
    /// Creates the switch and one namespace per member name.
    pub fn new(members: &[&str]) -> Result<Self> {
        let id = std::process::id() % 10_000;
        let mut lan = Self {
            id,
            subnet: 100 + (id % 100) as u8,
            members: members.iter().map(|m| m.to_string()).collect(),
            created: Vec::new(),
            root_if: None,
        };
        lan.build()
            .context("building the test network (needs root and iproute2)")?;
        Ok(lan)
    }

    fn hub(&self) -> String {
        format!("kura-hub-{}", self.id)
    }

    /// The namespace of member `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("kura-{name}-{}", self.id)
    }

    fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// The address of member `name`.
    pub fn ip(&self, name: &str) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            10,
            231,
            self.subnet,
            10 + self.index(name) as u8,
        ))
    }

    /// The switch-side interface of member `i` (≤ 15 characters).
    fn port(&self, i: usize) -> String {
        format!("kh{}p{i}", self.id)
    }

    fn build(&mut self) -> Result<()> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        self.created.push(hub.clone());
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..self.members.len() {
            let ns = self.ns(&self.members[i].clone());
            ip(&["netns", "add", &ns])?;
            self.created.push(ns.clone());
            let (inner, port) = (format!("kh{}m{i}", self.id), self.port(i));
            ip(&["link", "add", &inner, "type", "veth", "peer", "name", &port])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &port, "netns", &hub])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.ip(&self.members[i].clone()));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let (root_if, port) = (format!("kh{}r", self.id), format!("kh{}pr", self.id));
        ip(&[
            "link", "add", &root_if, "type", "veth", "peer", "name", &port,
        ])?;
        self.root_if = Some(root_if.clone());
        ip(&["link", "set", &port, "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
        let addr = format!("10.231.{}.1/24", self.subnet);
        ip(&["addr", "add", &addr, "dev", &root_if])?;
        ip(&["link", "set", &root_if, "up"])?;
        Ok(())
    }

    /// Unplugs member `name` from the switch: its packets are dropped both ways.
    pub fn cut(&self, name: &str) -> Result<()> {
        ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &self.port(self.index(name)),
            "down",
        ])
    }

    /// Plugs member `name` back in.
    pub fn restore(&self, name: &str) -> Result<()> {
        ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &self.port(self.index(name)),
            "up",
        ])
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Some(root_if) = &self.root_if {
            let _ = ip(&["link", "del", root_if]);
        }
        for ns in self.created.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
