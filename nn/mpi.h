/* nn over MPI: the transport of data-parallel training (nn/shard.h) on
 * MPI_COMM_WORLD. The one part of nn that needs MPI: nn/mpi.c is built into
 * its own library, libnn_mpi.a, by `make mpi` or whenever mpicc is found,
 * and linked before libnn.a (mpicc's flags: `mpicc --showme:link`). This
 * header itself names no MPI type, so it is installed with the others.
 *
 * The comm moves bytes only: point-to-point sends and receives and a
 * broadcast for exact mode (the sums are the library's, in its fixed
 * order), and for fast mode MPI_Iallreduce of gradient buckets (started
 * during backward, driven by MPI_Testall between layers, completed by
 * MPI_Waitall) and MPI_Allreduce of doubles. The environment variable
 * NN_MPI_OVERLAP=0 (read by nn_mpi_init; give every rank the same, e.g.
 * mpirun -x) leaves the non-blocking functions out: fast mode then sums
 * everything in one MPI_Allreduce after backward, for comparison;
 * NN_MPI_BUCKET_BYTES=n sets the comm's bucket_bytes (default
 * NN_SHARD_BUCKET_BYTES).
 *
 * Faults: any error on any rank should end with nn_mpi_abort, which prints
 * the rank and the message and calls MPI_Abort, so no rank waits forever
 * for one that has given up; a rank that dies (SIGKILL) is noticed by
 * mpirun, which ends the others.
 * Thread-safety: MPI is called from the thread that called nn_mpi_init only
 * (MPI_THREAD_FUNNELED); OpenMP threads inside nn never call it.
 */
#ifndef NN_NN_MPI_H
#define NN_NN_MPI_H

#include "nn/shard.h"

/* 1 when the program was started by mpirun/mpiexec (OpenMPI's, or a PMI
 * launcher's environment), 0 when started on its own: a program can then
 * keep its one-process path and never initialise MPI. */
int nn_mpi_launched(void);

/* MPI_Init_thread (funneled), errors returned rather than fatal, and *comm
 * over MPI_COMM_WORLD (rank, size, the functions, bucket_bytes). Errors: MPI
 * could not start (its message), NN_MPI_BUCKET_BYTES is not a number. */
nn_status nn_mpi_init(int *argc, char ***argv, nn_comm *comm);

/* The number of ranks on this machine (for threads per rank), or 1. */
int nn_mpi_local_size(void);

/* MPI_Finalize; call once at the end on every rank. */
void nn_mpi_finalize(void);

/* Prints "<prog>: rank R of N: msg" on stderr and ends every rank of the
 * job with MPI_Abort(code). Never returns. */
_Noreturn void nn_mpi_abort(const nn_comm *comm, const char *prog, int code, const char *msg);

#endif
