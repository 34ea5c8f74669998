//! A platform that can be killed: no graceful shutdown, as a SIGKILL.

use cpm::{Platform, Settings, Target};
use tokio::sync::oneshot;

/// A service in its own runtime on its own thread: `kill` drops that
/// runtime with no graceful shutdown, as a SIGKILL would.
pub struct Killable {
    pub endpoint: String,
    kill: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Killable {
    pub fn start(settings: Settings, targets: Vec<Target>) -> Self {
        let (ready_sender, ready) = std::sync::mpsc::channel();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let platform = Platform::start(settings, &targets).await.unwrap();
                ready_sender.send(platform.endpoint()).unwrap();
                let _ = killed.await;
                // The platform is dropped without stopping it.
                std::mem::forget(platform);
            });
            runtime.shutdown_background();
        });
        let endpoint = ready.recv().unwrap();
        Self {
            endpoint,
            kill,
            thread,
        }
    }

    pub fn kill(self) {
        let _ = self.kill.send(());
        self.thread.join().unwrap();
    }
}
